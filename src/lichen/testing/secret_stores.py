"""An in-memory twin of :class:`lichen.runtime.secret_stores.SecretStore`: secret resolution without files or keys."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class MemorySecretStore:
    """Implements :class:`lichen.runtime.secret_stores.SecretStore`; ``lookups`` records what was looked up."""

    def __init__(self, values: Mapping[str, str] | None = None, now: float = 0.0) -> None:
        self._values = dict(values or {})
        self._set_at = dict.fromkeys(self._values, now)
        self.lookups: list[tuple[str, ...]] = []
        """each :meth:`values` call's names, in order (a test checks the store was asked only when needed)"""

    def entries(self) -> dict[str, float]:
        return dict(self._set_at)

    def values(self, names: Iterable[str]) -> dict[str, str]:
        wanted = tuple(names)
        self.lookups.append(wanted)
        return {name: self._values[name] for name in wanted if name in self._values}

    def set(self, name: str, value: str, now: float) -> None:
        self._values[name] = value
        self._set_at[name] = now

    def remove(self, name: str) -> bool:
        self._set_at.pop(name, None)
        return self._values.pop(name, None) is not None
