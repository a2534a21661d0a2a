"""The base every model shares: fitting on a binary user × item matrix,
batch scoring for evaluation, single-history recommendation and item
similarity for the services, and saving/loading one artifact directory.

Artifact layout (one directory, registered as a whole)::

    model.json      kind, params, format version
    items.npy       raw item ids; position = the model's item index
    histories.npz   training history per user (raw user ids + CSR of item indices)
    weights.npz     the model's own arrays
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsys.interactions import IdMap
from recsys.memory_budgets import check_fit

ARTIFACT_FORMAT = 1


class RecModel:
    """A fitted recommender; subclasses implement ``_fit``, ``score_matrix``,
    ``_similarity_row`` and declare their arrays in ``_arrays``."""

    kind: ClassVar[str] = ""
    _arrays: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = dict(params)
        self.items = IdMap(np.zeros(0, np.int64))
        self.users = IdMap(np.zeros(0, np.int64))
        self._history = sp.csr_matrix((0, 0), dtype=np.float32)

    # ------------------------------------------------------------------ fitting

    def fit(self, matrix: sp.csr_matrix, users: IdMap, items: IdMap) -> RecModel:
        """Fit on a binary user × item matrix whose rows/columns follow ``users``/``items``."""
        matrix = sp.csr_matrix(matrix, dtype=np.float32)
        if matrix.shape != (len(users), len(items)):
            raise ValueError(f"matrix shape {matrix.shape} does not match maps ({len(users)}, {len(items)})")
        # refused before anything is allocated when the fit would not fit in the memory available
        check_fit(self.kind, n_items=matrix.shape[1], n_users=matrix.shape[0], nnz=matrix.nnz, params=self.params)
        self._bind(matrix, users, items)
        self._fit(matrix)
        return self

    def _bind(self, matrix: sp.csr_matrix, users: IdMap, items: IdMap) -> None:
        """Take the training matrix (the histories the model recommends from) and its id maps."""
        if matrix.shape != (len(users), len(items)):
            raise ValueError(f"matrix shape {matrix.shape} does not match maps ({len(users)}, {len(items)})")
        self.users, self.items = users, items
        self._history = matrix

    def _fit(self, matrix: sp.csr_matrix) -> None:
        raise NotImplementedError

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        """Dense scores (rows × items) for a batch of binary history rows."""
        raise NotImplementedError

    def score_history(self, seen: np.ndarray) -> np.ndarray:
        """Scores (a fresh float32 or float64 array) for one user whose history is the item indices ``seen``.

        The serving path: models with a cheaper single-row form override it.
        """
        row = sp.csr_matrix(
            (np.ones(len(seen), np.float32), (np.zeros(len(seen), np.int64), seen)),
            shape=(1, len(self.items)),
        )
        return np.array(self.score_matrix(row)[0], dtype=np.float64)

    def _similarity_row(self, item_index: int) -> np.ndarray:
        raise NotImplementedError

    # ----------------------------------------------------------------- serving

    @property
    def known_items(self) -> list[int]:
        return self.items.ids.tolist()

    @property
    def known_users(self) -> list[int]:
        return self.users.ids.tolist()

    def history(self, user_id: int) -> list[int]:
        """Raw item ids the user interacted with in the training data ([] if unknown)."""
        row = int(self.users.index([user_id])[0])
        if row < 0:
            return []
        start, end = self._history.indptr[row], self._history.indptr[row + 1]
        return self.items.ids[self._history.indices[start:end]].tolist()

    def recommend(
        self,
        history_item_ids: Iterable[int],
        k: int,
        exclude: set[int] | None = None,
        filter_fn: Callable[[int], bool] | None = None,
    ) -> list[tuple[int, float]]:
        """Top ``k`` (item id, score) for a user with this history; history
        items, ``exclude`` and items where ``filter_fn(item_id)`` is false are
        left out. Unknown item ids in the history are ignored."""
        seen = self.items.index(np.fromiter(history_item_ids, np.int64))
        seen = np.unique(seen[seen >= 0])
        scores = self.score_history(seen)
        scores[seen] = -np.inf
        if exclude:
            banned = self.items.index(np.fromiter(exclude, np.int64))
            scores[banned[banned >= 0]] = -np.inf
        return self._top(scores, k, filter_fn)

    def similar(self, item_id: int, k: int) -> list[tuple[int, float]]:
        """The ``k`` items most similar to ``item_id`` ([] if the item is unknown)."""
        index = int(self.items.index([item_id])[0])
        if index < 0:
            return []
        scores = np.array(self._similarity_row(index), dtype=np.float64)
        scores[index] = -np.inf
        return self._top(scores, k, None)

    def _top(self, scores: np.ndarray, k: int, filter_fn: Callable[[int], bool] | None) -> list[tuple[int, float]]:
        n = len(scores)
        if k <= 0 or n == 0:
            return []
        want = min(n, k if filter_fn is None else 4 * k + 16)
        while True:
            if want >= n:
                order = np.argsort(-scores, kind="stable")
            else:
                part = np.argpartition(-scores, want - 1)[:want]
                order = part[np.argsort(-scores[part], kind="stable")]
            if filter_fn is None:  # the common case, without a Python loop: the first k that are not excluded
                order = order[:k]
                values = scores[order]
                order = order[values > -np.inf]
                return list(zip(self.items.ids[order].tolist(), scores[order].astype(np.float64).tolist()))
            picked: list[tuple[int, float]] = []
            for index in order:
                score = scores[index]
                if score == -np.inf:
                    break
                item_id = int(self.items.ids[index])
                if filter_fn is not None and not filter_fn(item_id):
                    continue
                picked.append((item_id, float(score)))
                if len(picked) == k:
                    return picked
            if want >= n:
                return picked
            want = min(n, want * 4)

    # ------------------------------------------------------------- persistence

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "items.npy", self.items.ids)
        np.savez(
            directory / "histories.npz",
            user_ids=self.users.ids,
            indptr=self._history.indptr,
            indices=self._history.indices,
        )
        np.savez(directory / "weights.npz", **{name: getattr(self, name) for name in self._arrays})
        meta = {"format": ARTIFACT_FORMAT, "kind": self.kind, "params": self.params,
                "n_items": len(self.items), "n_users": len(self.users)}
        (directory / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return directory

    @classmethod
    def _restore(cls, directory: Path, params: dict[str, Any]) -> RecModel:
        model = cls(**params)
        model.items = IdMap(np.load(directory / "items.npy"))
        with np.load(directory / "histories.npz") as hist:
            model.users = IdMap(hist["user_ids"])
            model._history = sp.csr_matrix(
                (np.ones(len(hist["indices"]), np.float32), hist["indices"], hist["indptr"]),
                shape=(len(model.users), len(model.items)),
            )
        with np.load(directory / "weights.npz") as weights:
            model._load_weights({name: weights[name] for name in cls._arrays})
        model._restored()
        return model

    def _load_weights(self, arrays: dict[str, np.ndarray]) -> None:
        for name, value in arrays.items():
            setattr(self, name, value)

    def _restored(self) -> None:
        """Hook: rebuild derived state after loading."""
