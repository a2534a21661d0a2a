"""Quality on the real MovieLens 100K (read in place from ../shared/data, never
copied): under RecBole's protocol, mean over 3 seeds, EASE reaches
NDCG@10 ≥ 0.33 and Recall@10 ≥ 0.27, above RecBole's published BPR, and the NTK kernel ridge
beats EASE by more than 3 % on both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ML100K = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "ml-100k"


@pytest.mark.slow
def test_ease_on_ml100k_beats_recbole_bpr(tmp_path, monkeypatch, capsys):
    if not (ML100K / "u.data").is_file():
        pytest.skip(f"MovieLens 100K not found at {ML100K} (CI provides it; never copy it into the repo)")
    from recsys import datasets
    from recsys.downloading import UDATA_SHA256
    from recsys.evaluating import RECBOLE_ML100K
    from recsys.jobs import evaluate, ingest

    monkeypatch.chdir(tmp_path)
    assert ingest(["--data", str(ML100K), "--no-events"]) == 0
    data, manifest = datasets.load_dataset(tmp_path / ".lichen" / "datasets")
    assert (len(data), data.n_users, data.n_items) == (100_000, 943, 1682)
    assert manifest["source"]["sha256"] == UDATA_SHA256 and manifest["bad_rows"] == 0
    assert manifest["item_metadata"]["items"] == 1682

    assert evaluate(["--models", "kernel,ease,pop", "--seeds", "0,1,2"]) == 0
    assert "RecBole BPR (docs)" in capsys.readouterr().out
    result = json.loads((tmp_path / ".lichen" / "evaluations" / f"{manifest['version']}.json").read_text())
    ease, pop = result["summary"]["ease"], result["summary"]["pop"]
    assert ease["seeds"] == 3
    assert ease["ndcg"] >= 0.33, ease
    assert ease["recall"] >= 0.27, ease
    best_bpr = max(ref["ndcg"] for ref in RECBOLE_ML100K.values())
    assert ease["ndcg"] > best_bpr and ease["ndcg"] > pop["ndcg"]
    kernel = result["summary"]["kernel"]
    assert kernel["ndcg"] > 1.03 * ease["ndcg"] and kernel["recall"] > 1.03 * ease["recall"], (kernel, ease)
