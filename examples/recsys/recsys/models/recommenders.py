"""The base every model shares: fitting on a binary user × item matrix,
batch scoring for evaluation, single-history recommendation and item
similarity for the services, and saving/loading one artifact directory.

Artifact layout (one directory, registered as a whole)::

    model.json      kind, params, format version
    items.npy       raw item ids; position = the model's item index
    histories.npz   training history per user (raw user ids + CSR of item indices)
    weights.npz     the model's own arrays
    candidates.npz  optional: the heaviest users' certified top items (``recsys.models.candidates``)
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
from recsys.models.candidates import DEFAULT_COUNT, Candidates, min_history_for, pick, precompute

ARTIFACT_FORMAT = 1
_NONE = np.zeros(0, np.int64)


class RecModel:
    """A fitted recommender; subclasses implement ``_fit``, ``score_matrix``,
    ``_similarity_row`` and declare their arrays in ``_arrays``."""

    kind: ClassVar[str] = ""
    _arrays: ClassVar[tuple[str, ...]] = ()
    # True when a history's scores are the sum of its items' rows, so precomputed candidates can be
    # updated with a user's new items (recsys.models.candidates)
    linear_in_history: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = dict(params)
        self.items = IdMap(np.zeros(0, np.int64))
        self.users = IdMap(np.zeros(0, np.int64))
        self._history = sp.csr_matrix((0, 0), dtype=np.float32)
        self.candidates: Candidates | None = None
        self.fitted_on = "cpu"  # or the accelerator the last fit ran on (recsys.models.accelerators)

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

    def _training_user_scores(self, row: int) -> np.ndarray | None:
        """A fresh copy of training user ``row``'s scores when the model keeps them (what ``score_history``
        would give for their training history), else None."""
        return None

    def precompute_candidates(self, min_history: int | None = None, count: int = DEFAULT_COUNT) -> int:
        """Keep the certified top ``count`` items of every user with more than ``min_history`` training items
        (default: those whose scoring reads more than ``candidates.SCORING_BUDGET`` weights; negative: none).
        Models linear in the history only; a no-op otherwise. Returns how many users got them."""
        if min_history is None:
            min_history = min_history_for(len(self.items))
        if not self.linear_in_history or min_history < 0:
            self.candidates = None
            return 0
        candidates = precompute(self.score_matrix, self._history, min_history=min_history, count=count)
        self.candidates = candidates if len(candidates) else None  # no one that heavy: no file in the artifact
        return len(candidates)

    # ----------------------------------------------------------------- serving

    @property
    def known_items(self) -> list[int]:
        return self.items.ids.tolist()

    @property
    def known_users(self) -> list[int]:
        return self.users.ids.tolist()

    def history(self, user_id: int) -> list[int]:
        """Raw item ids the user interacted with in the training data ([] if unknown)."""
        row = self.users.position(user_id)
        if row < 0:
            return []
        start, end = self._history.indptr[row], self._history.indptr[row + 1]
        return self.items.ids[self._history.indices[start:end]].tolist()

    def knows(self, user_id: int) -> bool:
        return self.users.position(user_id) >= 0

    def recommend_user(
        self,
        user_id: int,
        recent_item_ids: Iterable[int],
        k: int,
        exclude: set[int] | None = None,
        filter_fn: Callable[[int], bool] | None = None,
    ) -> list[tuple[int, float]]:
        """:meth:`recommend` for a user's training history plus ``recent_item_ids`` (items sent since). From the
        user's precomputed candidates when they certify the answer; by scoring the whole history otherwise."""
        recent = list(recent_item_ids)
        row = self.users.position(user_id)
        seen = self._history.indices[self._history.indptr[row]:self._history.indptr[row + 1]] if row >= 0 else _NONE
        fresh = _NONE
        if recent:
            fresh = self.items.index(np.fromiter(recent, np.int64, len(recent)))
            fresh = np.setdiff1d(fresh[fresh >= 0], seen)
        banned = self._indices(exclude)
        position = self.candidates.find(row) if row >= 0 and self.candidates is not None else -1
        if position >= 0:
            picked = pick(self.candidates, position, k, seen=seen, fresh=fresh,
                          delta=self.score_history(fresh) if len(fresh) else None, banned=banned,
                          filter_fn=filter_fn, item_ids=self.items.ids)
            if picked is not None:
                return picked
        if row >= 0 and not len(fresh):  # a model that kept this user's scores need not score the history again
            return self._recommend_seen(seen, k, banned, filter_fn, self._training_user_scores(row))
        # training rows hold sorted, distinct item indices; the fresh ones are distinct and not among them
        return self._recommend_seen(np.union1d(seen, fresh) if len(fresh) else seen, k, banned, filter_fn)

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
        return self._recommend_seen(np.unique(seen[seen >= 0]), k, self._indices(exclude), filter_fn)

    def _indices(self, item_ids: set[int] | None) -> np.ndarray | None:
        """The known items' indices among ``item_ids`` (None for none given)."""
        if not item_ids:
            return None
        found = self.items.index(np.fromiter(item_ids, np.int64, len(item_ids)))
        return found[found >= 0]

    def _recommend_seen(self, seen: np.ndarray, k: int, banned: np.ndarray | None,
                        filter_fn: Callable[[int], bool] | None,
                        scores: np.ndarray | None = None) -> list[tuple[int, float]]:
        """:meth:`recommend` from sorted, distinct item indices, scoring them unless ``scores`` (a fresh array
        the caller gives up) already holds their scores."""
        if scores is None:
            scores = self.score_history(seen)
        scores[seen] = -np.inf
        if banned is not None:
            scores[banned] = -np.inf
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
        if self.candidates is not None:
            np.savez(directory / "candidates.npz", **self.candidates.arrays())
        meta = {"format": ARTIFACT_FORMAT, "kind": self.kind, "params": self.params,
                "n_items": len(self.items), "n_users": len(self.users),
                "candidate_users": len(self.candidates) if self.candidates is not None else 0,
                "fitted_on": self.fitted_on}
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
        if (directory / "candidates.npz").is_file():
            with np.load(directory / "candidates.npz") as arrays:
                model.candidates = Candidates(**{name: arrays[name] for name in ("rows", "items", "scores", "bounds")})
        model._restored()
        return model

    def _load_weights(self, arrays: dict[str, np.ndarray]) -> None:
        for name, value in arrays.items():
            setattr(self, name, value)

    def _restored(self) -> None:
        """Hook: rebuild derived state after loading."""
