"""The embedded series store: per-series numpy buffers, a label index, retention and snapshots.

Interface (stable; used by the engine, the rules, the scraper, the HTTP API and the dashboard):

* ``SeriesStore(retention_s=6*3600, max_series=200_000, max_samples_per_series=None)``
* ``store.append(labels: Mapping[str, str], t_ms: int, value: float)`` — one sample; ``labels``
  includes ``__name__``. Out-of-order samples (older than the series' last) are dropped, as
  Prometheus does; an equal timestamp overwrites.
* ``store.append_many(items: Iterable[tuple[Mapping, int, float]])``
* ``store.append_at(t_ms, items: Iterable[tuple[labels_key, float]])`` — a whole scrape at once.
* ``store.select(matchers, start_ms, end_ms) -> list[SeriesData]`` — ``matchers`` is a list of
  ``LabelMatcher`` (``=``, ``!=``, ``=~``, ``!~``, anchored regexes); each ``SeriesData`` holds
  ``labels`` (a sorted tuple of pairs) and numpy arrays ``t_ms`` (int64) and ``values`` (float64)
  restricted to ``[start_ms, end_ms]``. Stale markers are kept (see :data:`STALE_NAN`).
* ``store.label_names(matchers=None)``, ``store.label_values(name, matchers=None)``
* ``store.select_flat(matchers, start_ms, end_ms) -> (label_dicts, t_ms, values, lengths)`` —
  the same, concatenated (what the engine uses).
* ``store.series_labels(matchers, start_ms, end_ms)`` — label sets with samples in the range.
* ``store.mark_stale(labels, t_ms)`` — append Prometheus' stale marker.
* ``store.drop_expired(now_ms)`` — apply the retention window (also done lazily on append);
  series left without samples are dropped from the index, so replica churn does not grow it.
* ``store.snapshot(path)`` / ``SeriesStore.restore(path)`` — atomic on-disk copy (tmp + fsync +
  rename) so a restart keeps history; ``store.stats()`` reports series, samples and bytes/sample.

Memory: each sample costs 16 bytes in the buffers (int64 milliseconds + float64 value); a
series' buffer grows by doubling (by 1.25x past 1024 samples) and is compacted in place when the
expired prefix passes half of it, so
memory is bounded by ``retention / scrape interval`` samples per series and ``max_series``.
"""

from __future__ import annotations

import json
import os
import re
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lichen.errors import DataError, StateError

#: Prometheus' stale marker: a NaN with a specific bit pattern.
STALE_BITS = 0x7FF0000000000002
STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", STALE_BITS))[0]

Labels = tuple[tuple[str, str], ...]


def is_stale(value: float) -> bool:
    return value != value and struct.pack("<d", value) == struct.pack("<Q", STALE_BITS)


def stale_mask(values: np.ndarray) -> np.ndarray:
    """Boolean mask of the stale markers in a float64 array."""
    return values.view(np.int64) == np.int64(STALE_BITS)


def labels_key(labels: Mapping[str, str]) -> Labels:
    """The canonical, hashable form of a label set: sorted pairs, empty values dropped."""
    return tuple(sorted([(k, v) for k, v in labels.items() if v != ""]))


@dataclass(frozen=True)
class LabelMatcher:
    name: str
    op: str  # "=", "!=", "=~", "!~"
    value: str

    def __post_init__(self) -> None:
        if self.op not in ("=", "!=", "=~", "!~"):
            raise DataError(f"unknown label matcher operator {self.op!r}")
        if self.op in ("=~", "!~"):
            try:
                object.__setattr__(self, "_regex", re.compile(f"^(?:{self.value})$", re.DOTALL))
            except re.error as exc:
                raise DataError(f"invalid regex {self.value!r} in matcher for label {self.name!r}: {exc}") from None

    def matches(self, value: str) -> bool:
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        hit = self._regex.match(value) is not None  # type: ignore[attr-defined]
        return hit if self.op == "=~" else not hit


@dataclass
class SeriesData:
    labels: Labels
    t_ms: np.ndarray
    values: np.ndarray
    label_dict: dict[str, str] = field(default_factory=dict)  # shared with the store: read-only


class _Buffer:
    """Growable ring-like buffer of one series: [start, end) is live."""

    __slots__ = ("t", "v", "start", "end")

    def __init__(self, capacity: int = 16) -> None:
        self.t = np.empty(capacity, dtype=np.int64)
        self.v = np.empty(capacity, dtype=np.float64)
        self.start = 0
        self.end = 0

    def append(self, t_ms: int, value: float) -> None:
        if self.end > self.start:
            last = int(self.t[self.end - 1])
            if t_ms < last:
                return
            if t_ms == last:
                self.v[self.end - 1] = value
                return
        if self.end == len(self.t):
            live = self.end - self.start
            if self.start >= len(self.t) // 2:
                self.t[:live] = self.t[self.start : self.end]
                self.v[:live] = self.v[self.start : self.end]
            else:
                cap = max(16, len(self.t) * 2 if len(self.t) < 1024 else len(self.t) * 5 // 4)
                t = np.empty(cap, dtype=np.int64)
                v = np.empty(cap, dtype=np.float64)
                t[:live] = self.t[self.start : self.end]
                v[:live] = self.v[self.start : self.end]
                self.t, self.v = t, v
            self.start, self.end = 0, live
        self.t[self.end] = t_ms
        self.v[self.end] = value
        self.end += 1

    def drop_before(self, t_ms: int) -> None:
        i = int(np.searchsorted(self.t[self.start : self.end], t_ms, side="left"))
        self.start += i
        if self.start == self.end:
            self.start = self.end = 0

    def trim_to(self, max_samples: int) -> None:
        if self.end - self.start > max_samples:
            self.start = self.end - max_samples

    def window(self, start_ms: int, end_ms: int) -> tuple[np.ndarray, np.ndarray]:
        if self.end == self.start:
            return self.t[:0], self.v[:0]
        t = self.t[self.start : self.end]
        lo = 0 if int(t[0]) >= start_ms else int(t.searchsorted(start_ms, side="left"))
        hi = len(t) if int(t[-1]) <= end_ms else int(t.searchsorted(end_ms, side="right"))
        return t[lo:hi], self.v[self.start + lo : self.start + hi]

    def __len__(self) -> int:
        return self.end - self.start


class SeriesStore:
    """In-memory series store with a label index and a retention window."""

    def __init__(
        self,
        retention_s: float = 6 * 3600.0,
        max_series: int = 200_000,
        max_samples_per_series: int | None = None,
    ) -> None:
        self.retention_ms = int(retention_s * 1000)
        self.max_series = max_series
        self.max_samples_per_series = max_samples_per_series
        self._ids: dict[Labels, int] = {}
        self._labels: list[Labels] = []
        self._label_dicts: list[dict[str, str]] = []
        self._buffers: list[_Buffer] = []
        self._postings: dict[str, dict[str, set[int]]] = {}
        self._lock = threading.RLock()
        self._appends_since_expiry = 0
        self._max_t_ms = 0
        self.dropped_series = 0

    # ------------------------------------------------------------------ writes

    def _series_id(self, key: Labels) -> int | None:
        sid = self._ids.get(key)
        if sid is not None:
            return sid
        if len(self._ids) >= self.max_series:
            self.dropped_series += 1
            return None
        sid = len(self._labels)
        self._ids[key] = sid
        self._labels.append(key)
        self._label_dicts.append(dict(key))
        self._buffers.append(_Buffer())
        for name, value in key:
            self._postings.setdefault(name, {}).setdefault(value, set()).add(sid)
        return sid

    def append(self, labels: Mapping[str, str] | Labels, t_ms: int, value: float) -> None:
        key = labels if isinstance(labels, tuple) else labels_key(labels)
        with self._lock:
            sid = self._series_id(key)
            if sid is None:
                return
            buf = self._buffers[sid]
            buf.append(int(t_ms), float(value))
            if self.max_samples_per_series is not None:
                buf.trim_to(self.max_samples_per_series)
            if t_ms > self._max_t_ms:
                self._max_t_ms = int(t_ms)
            self._appends_since_expiry += 1
            if self._appends_since_expiry >= 100_000:
                self.drop_expired(self._max_t_ms)

    def append_at(self, t_ms: int, items: Iterable[tuple[Labels, float]]) -> None:
        """Append one sample per series, all at ``t_ms`` (a scrape): one lock round-trip, canonical label keys."""
        t_ms = int(t_ms)
        with self._lock:
            ids = self._ids
            buffers = self._buffers
            cap = self.max_samples_per_series
            count = 0
            for key, value in items:
                sid = ids.get(key)
                if sid is None:
                    sid = self._series_id(key)
                    if sid is None:
                        continue
                buf = buffers[sid]
                buf.append(t_ms, float(value))
                if cap is not None:
                    buf.trim_to(cap)
                count += 1
            if t_ms > self._max_t_ms:
                self._max_t_ms = t_ms
            self._appends_since_expiry += count
            if self._appends_since_expiry >= 100_000:
                self.drop_expired(self._max_t_ms)

    def append_many(self, items: Iterable[tuple[Mapping[str, str] | Labels, int, float]]) -> None:
        with self._lock:
            for labels, t_ms, value in items:
                self.append(labels, t_ms, value)

    def mark_stale(self, labels: Mapping[str, str] | Labels, t_ms: int) -> None:
        self.append(labels, t_ms, STALE_NAN)

    def drop_expired(self, now_ms: int) -> None:
        """Forget samples older than the retention window (series keep their index entry)."""
        with self._lock:
            cutoff = int(now_ms) - self.retention_ms
            empty = 0
            for buf in self._buffers:
                if len(buf) and buf.t[buf.start] < cutoff:
                    buf.drop_before(cutoff)
                if not len(buf):
                    empty += 1
            self._appends_since_expiry = 0
            if empty and (empty >= 1000 or empty * 10 >= len(self._buffers) or len(self._ids) >= self.max_series):
                self._forget_empty_series()

    def _forget_empty_series(self) -> None:
        """Drop index entries of series with no samples left (replica churn would otherwise grow the index forever)."""
        live = [sid for sid, buf in enumerate(self._buffers) if len(buf)]
        self._labels = [self._labels[sid] for sid in live]
        self._label_dicts = [self._label_dicts[sid] for sid in live]
        self._buffers = [self._buffers[sid] for sid in live]
        self._ids = {key: sid for sid, key in enumerate(self._labels)}
        self._postings = {}
        for sid, key in enumerate(self._labels):
            for name, value in key:
                self._postings.setdefault(name, {}).setdefault(value, set()).add(sid)

    # ------------------------------------------------------------------- reads

    def _candidates(self, matchers: Sequence[LabelMatcher]) -> Iterable[int]:
        ids: set[int] | None = None
        for m in matchers:
            if m.op == "=" and m.value != "":
                hit = self._postings.get(m.name, {}).get(m.value, set())
                ids = set(hit) if ids is None else ids & hit
            elif m.op == "=~" and not m.matches(""):
                hit = set()
                for value, sids in self._postings.get(m.name, {}).items():
                    if m.matches(value):
                        hit |= sids
                ids = hit if ids is None else ids & hit
            if ids is not None and not ids:
                return ()
        if ids is None:
            return range(len(self._labels))
        return sorted(ids)

    def _matching_ids(self, matchers: Sequence[LabelMatcher]) -> list[int]:
        # equality and non-empty regex matchers were applied through the postings already
        rest = [m for m in matchers if not ((m.op == "=" and m.value != "") or (m.op == "=~" and not m.matches("")))]
        candidates = self._candidates(matchers)
        if not rest:
            return list(candidates)
        dicts = self._label_dicts
        return [sid for sid in candidates if all(m.matches(dicts[sid].get(m.name, "")) for m in rest)]

    def select(self, matchers: Sequence[LabelMatcher], start_ms: int, end_ms: int) -> list[SeriesData]:
        with self._lock:
            out = []
            for sid in self._matching_ids(matchers):
                t, v = self._buffers[sid].window(int(start_ms), int(end_ms))
                if len(t):
                    out.append(SeriesData(self._labels[sid], t.copy(), v.copy(), self._label_dicts[sid]))
            return out

    def select_flat(
        self, matchers: Sequence[LabelMatcher], start_ms: int, end_ms: int
    ) -> tuple[list[dict[str, str]], np.ndarray, np.ndarray, np.ndarray]:
        """Like :meth:`select`, with every series' samples concatenated: ``(label_dicts, t_ms, values, lengths)``.

        One copy for all series; the label dicts are the store's own (read-only).
        """
        with self._lock:
            dicts, ts, vs, lengths = [], [], [], []
            lo_ms, hi_ms = int(start_ms), int(end_ms)
            for sid in self._matching_ids(matchers):
                t, v = self._buffers[sid].window(lo_ms, hi_ms)
                if len(t):
                    dicts.append(self._label_dicts[sid])
                    ts.append(t)
                    vs.append(v)
                    lengths.append(len(t))
            if not dicts:
                return [], np.empty(0, np.int64), np.empty(0), np.empty(0, np.int64)
            return dicts, np.concatenate(ts), np.concatenate(vs), np.array(lengths, dtype=np.int64)

    def series_labels(
        self, matchers: Sequence[LabelMatcher], start_ms: int | None = None, end_ms: int | None = None
    ) -> list[Labels]:
        lo = -(2**62) if start_ms is None else int(start_ms)
        hi = 2**62 if end_ms is None else int(end_ms)
        with self._lock:
            return [
                self._labels[sid]
                for sid in self._matching_ids(matchers)
                if len(self._buffers[sid].window(lo, hi)[0])
            ]

    def label_names(self, matchers: Sequence[LabelMatcher] | None = None) -> list[str]:
        with self._lock:
            if not matchers:
                return sorted(n for n, vals in self._postings.items() if vals)
            names: set[str] = set()
            for labels in self.series_labels(matchers):
                names.update(k for k, _ in labels)
            return sorted(names)

    def label_values(self, name: str, matchers: Sequence[LabelMatcher] | None = None) -> list[str]:
        with self._lock:
            if not matchers:
                return sorted(v for v, ids in self._postings.get(name, {}).items() if ids)
            values = {dict(labels).get(name) for labels in self.series_labels(matchers)}
            return sorted(v for v in values if v)

    def stats(self) -> dict[str, float]:
        """Series and sample counts and the memory the sample buffers hold."""
        with self._lock:
            samples = sum(len(b) for b in self._buffers)
            allocated = sum(b.t.nbytes + b.v.nbytes for b in self._buffers)
            return {
                "series": len(self._labels),
                "samples": samples,
                "buffer_bytes": allocated,
                "bytes_per_sample": (allocated / samples) if samples else 0.0,
                "dropped_series": self.dropped_series,
            }

    # ------------------------------------------------------------- persistence

    def snapshot(self, path: str | os.PathLike[str]) -> None:
        """Write every live sample to ``path`` atomically (tmp + fsync + rename)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            labels = [[list(p) for p in key] for key in self._labels]
            lengths = np.array([len(b) for b in self._buffers], dtype=np.int64)
            t = np.concatenate([b.t[b.start : b.end] for b in self._buffers]) if self._buffers else np.empty(0, np.int64)
            v = np.concatenate([b.v[b.start : b.end] for b in self._buffers]) if self._buffers else np.empty(0)
        tmp = target.with_name(target.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                labels=np.frombuffer(json.dumps(labels).encode(), dtype=np.uint8),
                lengths=lengths,
                t=t,
                v=v,
                retention_ms=np.array([self.retention_ms], dtype=np.int64),
            )
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)

    @classmethod
    def restore(cls, path: str | os.PathLike[str], **kwargs: object) -> SeriesStore:
        """Load a snapshot written by :meth:`snapshot`; a missing file gives an empty store."""
        target = Path(path)
        store = cls(**kwargs)  # type: ignore[arg-type]
        if not target.exists():
            return store
        try:
            with np.load(target) as data:
                labels = json.loads(bytes(data["labels"]).decode())
                lengths = data["lengths"]
                t = data["t"]
                v = data["v"]
        except (OSError, ValueError, KeyError) as exc:
            raise StateError(f"cannot read series snapshot: {exc}", where=str(target)) from None
        offset = 0
        for pairs, n in zip(labels, lengths, strict=True):
            key = tuple((k, val) for k, val in pairs)
            sid = store._series_id(key)
            n = int(n)
            if sid is not None and n:
                buf = store._buffers[sid]
                buf.t = t[offset : offset + n].copy()
                buf.v = v[offset : offset + n].copy()
                buf.start, buf.end = 0, n
                store._max_t_ms = max(store._max_t_ms, int(buf.t[-1]))
            offset += n
        return store
