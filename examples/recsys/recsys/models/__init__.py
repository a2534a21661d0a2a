"""Recommender models (NTK kernel ridge, EASE, ALS, ItemKNN, popularity), one artifact directory
each, and :func:`load_model`, which the online services use to load the
promoted version from the model registry."""

from __future__ import annotations

import json
from pathlib import Path

from recsys.models.als import ALS
from recsys.models.ease import EASE
from recsys.models.itemknn import ItemKNN
from recsys.models.kernel_ridge import KernelRidge
from recsys.models.popularity import Popularity
from recsys.models.recommenders import ARTIFACT_FORMAT, RecModel

MODEL_KINDS: dict[str, type[RecModel]] = {cls.kind: cls for cls in (KernelRidge, EASE, ALS, ItemKNN, Popularity)}

__all__ = ["ALS", "EASE", "MODEL_KINDS", "ItemKNN", "KernelRidge", "Popularity", "RecModel", "load_model", "make_model"]


def make_model(kind: str, **params) -> RecModel:
    try:
        cls = MODEL_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown model {kind!r}; expected one of {', '.join(MODEL_KINDS)}") from None
    return cls(**params)


def load_model(path: str | Path) -> RecModel:
    """Load a model artifact directory written by ``RecModel.save``."""
    directory = Path(path)
    meta_path = directory / "model.json"
    if not meta_path.is_file():
        from lichen import DataError

        raise DataError("not a model artifact: model.json is missing", where=str(directory))
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != ARTIFACT_FORMAT:
        from lichen import DataError

        raise DataError(f"unsupported model artifact format {meta.get('format')!r}", where=str(meta_path))
    cls = MODEL_KINDS.get(meta.get("kind"))
    if cls is None:
        from lichen import DataError

        raise DataError(f"unknown model kind {meta.get('kind')!r}", where=str(meta_path))
    return cls._restore(directory, meta.get("params", {}))
