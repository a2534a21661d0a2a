"""Ingest: every MovieLens format, generic CSV, the events log, and bad data
reported with file and line number."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lichen import DataError

from recsys import datasets
from recsys.jobs import ingest


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _latest(app_dir: Path):
    return datasets.load_dataset(app_dir / ".lichen" / "datasets")


def test_reads_udata_and_metadata_beside_it(app_dir):
    src = app_dir / "ml"
    src.mkdir()
    _write(src / "u.data", "1\t10\t5\t881250949\n1\t20\t3\t881250950\n2\t10\t4\t881250951\n")
    (src / "u.item").write_bytes("10|Caf\xe9 Movie (1995)|01-Jan-1995||http://x|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
                                 .encode("iso-8859-1"))
    assert ingest(["--data", str(src)]) == 0
    data, manifest = _latest(app_dir)
    assert len(data) == 3 and manifest["users"] == 2 and manifest["items"] == 2
    assert manifest["source"]["kind"] == "file" and manifest["bad_rows"] == 0
    items = datasets.load_items(app_dir / ".lichen" / "datasets", manifest["version"])
    assert items[10] == {"title": "Café Movie (1995)", "genres": ["Action"], "year": 1995}


def test_reads_ratings_dat_and_ratings_csv(app_dir):
    dat = _write(app_dir / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    ingest(["--data", str(dat)])
    data, manifest = _latest(app_dir)
    assert sorted(data.items.tolist()) == [661, 1193] and list(manifest["formats"].values()) == ["dat"]
    csv = _write(app_dir / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,3.5,964981247\n")
    ingest(["--data", str(csv)])
    data, manifest = _latest(app_dir)
    assert data.ratings.tolist() == [4.0, 3.5] and list(manifest["formats"].values()) == ["csv"]


def test_csv_with_a_byte_order_mark_and_crlf_line_ends(app_dir):
    src = app_dir / "ratings.csv"
    src.write_bytes("userId,movieId,rating,timestamp\r\n1,1,4.0,9\r\n2,1,3.0,9\r\n".encode("utf-8-sig"))
    ingest(["--data", str(src)])
    data, _ = _latest(app_dir)
    assert data.users.tolist() == [1, 2]


def test_generic_csv_with_column_mapping_and_no_rating(app_dir):
    src = _write(app_dir / "clicks.csv", "ts,who,what\n100,7,70\n101,7,71\n102,8,70\n")
    ingest(["--data", str(src), "--columns", "user=who,item=what,timestamp=ts"])
    data, _ = _latest(app_dir)
    assert data.users.tolist() == [7, 7, 8] and data.items.tolist() == [70, 71, 70]
    assert data.timestamps.tolist() == [100, 101, 102] and set(data.ratings.tolist()) == {1.0}


@pytest.mark.parametrize(
    ("name", "text", "args", "where", "message"),
    [
        ("u.data", "1\t2\t3\t4\nabc\t2\t3\t4\n", [], "u.data:2", "user id 'abc' is not an integer"),
        ("u.data", "1\t2\t3\t4\n1\tx9\t3\t4\n", [], "u.data:2", "item id 'x9' is not an integer"),
        ("ratings.csv", "userId,rating,timestamp\n1,4,5\n", [], "ratings.csv:1", "missing column 'movieId'"),
        ("u.data", "1\t2\t3\t4\n1\t2\n", [], "u.data:2", "expected 4 fields"),
        ("u.data", "", [], "u.data:1", "empty file"),
        ("u.data", "\n\n", [], "u.data:1", "empty file"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n", [], "ratings.csv:1", "empty file"),
        ("u.data", "1,2,3,4\n1,3,3,4\n", [], "u.data:1", "wrong delimiter"),
        ("ratings.csv", "userId;movieId;rating\n1;2;3\n", [], "ratings.csv:1", "wrong delimiter"),
        ("u.data", "1\t2\t3\t4\n1\t3\t7\t4\n", [], "u.data:2", "rating 7 is outside 0.5..5"),
        ("u.data", "1\t2\t3\t4\n1\t3\t0\t4\n", ["--rating-range", "1,5"], "u.data:2", "rating 0 is outside 1..5"),
        ("u.data", "1\t2\t3\t4\n2\t2\t3\t4\n1\t2\t4\t9\n", ["--on-duplicates", "fail"], "u.data:3",
         "duplicate event: user 1, item 2 also at"),
    ],
)
def test_bad_data_is_a_clear_error_with_the_line(app_dir, name, text, args, where, message):
    src = _write(app_dir / name, text)
    with pytest.raises(DataError) as info:
        ingest(["--data", str(src), *args])
    assert info.value.where.endswith(where), info.value
    assert message in info.value.message, info.value
    assert not (app_dir / ".lichen" / "datasets" / datasets.LATEST).exists()


def test_fail_policy_names_the_first_bad_line_and_counts_the_rest(app_dir):
    # Line 4 has no timestamp, which u.data allows; lines 2, 3 and 5 are bad.
    src = _write(app_dir / "u.data", "1\t2\t3\t4\n1\tq\t3\t4\n2\t2\t9\t4\n3\t2\t3\n3\t4\t3\tlate\n")
    with pytest.raises(DataError) as info:
        ingest(["--data", str(src)])
    text = str(info.value)
    assert text.startswith(f"{src}:2: item id 'q'") and "2 more bad rows" in text
    assert "line 3: rating 9" in text and "line 5: timestamp 'late'" in text


def test_skip_policy_keeps_good_rows_and_reports_each_bad_line(app_dir):
    src = _write(app_dir / "u.data", "1\t2\t3\t4\n1\tq\t3\t4\n2\t2\t9\t4\n2\t3\t4\t4\n1\t2\t5\t8\n")
    ingest(["--data", str(src), "--on-bad-rows", "skip"])
    data, manifest = _latest(app_dir)
    assert sorted(zip(data.users.tolist(), data.items.tolist())) == [(1, 2), (2, 3)]
    assert manifest["bad_rows"] == 2
    assert manifest["bad_row_lines"] == [f"{src}:2: item id 'q' is not an integer",
                                         f"{src}:3: rating 9 is outside 0.5..5"]
    # (1, 2) at line 1 and line 5: the later event wins and the removal is reported with both lines.
    assert manifest["duplicates_removed"] == 1
    assert manifest["duplicate_lines"] == [f"{src}:1: duplicate (user 1, item 2) removed; kept {src}:5"]
    assert data.ratings[data.items == 2].tolist() == [5.0]


def test_events_log_is_merged_idempotently_and_a_torn_line_is_reported(app_dir):
    src = _write(app_dir / "u.data", "1\t10\t5\t100\n")
    events = app_dir / ".lichen" / "events"
    events.mkdir(parents=True)
    lines = [
        {"event_id": "a", "user_id": 1, "item_id": 11, "timestamp": 200},
        {"event_id": "a", "user_id": 1, "item_id": 11, "timestamp": 200},  # redelivered: counted once
        {"event_id": "b", "user_id": 2, "item_id": 10, "rating": 4, "ts": 201.5},
    ]
    (events / "events-0001.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines) + '{"event_id": "c", "us')
    with pytest.raises(DataError) as info:
        ingest(["--data", str(src)])
    assert info.value.where.endswith("events/events-0001.jsonl:4") and "not valid JSON" in info.value.message
    ingest(["--data", str(src), "--on-bad-rows", "skip"])
    data, manifest = _latest(app_dir)
    assert sorted(zip(data.users.tolist(), data.items.tolist())) == [(1, 10), (1, 11), (2, 10)]
    assert manifest["events"]["rows"] == 2 and manifest["duplicates_removed"] == 0 and manifest["bad_rows"] == 1


def test_versions_are_content_addressed_and_corruption_is_detected(app_dir):
    src = _write(app_dir / "u.data", "1\t10\t5\t100\n2\t10\t3\t100\n")
    ingest(["--data", str(src)])
    _, first = _latest(app_dir)
    ingest(["--data", str(src)])
    _, again = _latest(app_dir)
    assert again["version"] == first["version"] and again["created_at"] == first["created_at"]
    _write(src, "1\t10\t5\t100\n2\t11\t3\t100\n")
    ingest(["--data", str(src)])
    _, second = _latest(app_dir)
    assert second["version"] != first["version"]
    store = app_dir / ".lichen" / "datasets"
    npz = store / second["version"] / "interactions.npz"
    blob = bytearray(npz.read_bytes())
    blob[-10] ^= 0xFF
    npz.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="checksum mismatch"):
        datasets.load_dataset(store)
    # The corrupt version is rewritten whole by the next ingest of the same data.
    ingest(["--data", str(src)])
    data, _ = datasets.load_dataset(store)
    assert np.array_equal(data.items, [10, 11])


def test_no_path_and_no_network_falls_back_to_synthetic_and_says_so(app_dir, monkeypatch, capsys):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("RECSYS_ML100K_URL", f"http://127.0.0.1:{port}/ml-100k.zip")
    ingest(["--users", "60", "--items", "80"])
    out = capsys.readouterr().out
    assert "no network" in out and "SYNTHETIC" in out
    data, manifest = _latest(app_dir)
    assert manifest["source"]["kind"] == "synthetic" and data.n_users == 60


def test_download_verifies_udata_checksum(app_dir):
    import hashlib
    import zipfile

    from recsys.downloading import fetch_ml100k

    body = b"1\t10\t5\t100\n2\t10\t4\t101\n"
    archive = app_dir / "served.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ml-100k/u.data", body)
        z.writestr("ml-100k/u.item", "10|Movie (1999)|||x|0|0|0|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0\n")
    url = archive.as_uri()
    with pytest.raises(DataError, match="sha256 mismatch"):
        fetch_ml100k(app_dir / "cache", url=url)  # the real checksum: this fake archive must be refused
    assert not (app_dir / "cache" / "ml-100k").exists()
    udata = fetch_ml100k(app_dir / "cache", url=url, expected_sha256=hashlib.sha256(body).hexdigest())
    assert udata.read_bytes() == body and (udata.parent / "u.item").is_file()


def test_synthetic_data_has_popularity_skew_and_structure():
    from recsys.synthesizing import synthesize

    data = synthesize(300, 1000, mean_per_user=40, seed=1)
    counts = np.sort(np.bincount(data.items))[::-1]
    top_decile = counts[: len(counts) // 10].sum() / counts.sum()
    assert top_decile > 0.3  # Zipf-like head (ML-100K: 0.43): the top 10% of items take far more than 10%
    assert set(np.unique(data.ratings).tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert len(np.unique(data.users * 10_000 + data.items)) == len(data)  # no duplicate pairs


def test_ingest_reads_what_the_events_service_appends(app_dir):
    from recsys.services import Event, EventLog

    src = _write(app_dir / "u.data", "1\t10\t5\t100\n")
    log = EventLog(app_dir / ".lichen" / "events")
    assert log.append(Event(event_id="e1", user_id=1, item_id=12, rating=4.5, timestamp=500), 1_700_000_000.0)[0]
    assert log.append(Event(event_id="e2", user_id=5, item_id=10, type="view"), 1_700_000_001.0)[0]
    assert not log.append(Event(event_id="e1", user_id=1, item_id=12, rating=4.5, timestamp=500),
                          1_700_000_002.0)[0]  # retried: accepted once
    ingest(["--data", str(src)])
    data, manifest = _latest(app_dir)
    rows = sorted(zip(data.users.tolist(), data.items.tolist(), data.ratings.tolist(), data.timestamps.tolist()))
    assert rows == [(1, 10, 5.0, 100), (1, 12, 4.5, 500), (5, 10, 1.0, 1_700_000_001)]
    assert manifest["events"]["rows"] == 2 and manifest["bad_rows"] == 0


# ------------------------------------------------------------ streaming reads

def _messy_file(path: Path, fmt: str, rows: int, seed: int) -> None:
    """``rows`` lines in ``fmt`` with bad rows, blank lines and CRLF ends sprinkled through them."""
    rng = np.random.default_rng(seed)
    delimiter = {"udata": "\t", "dat": "::", "csv": ","}[fmt]
    lines = ["userId,movieId,rating,timestamp"] if fmt == "csv" else []
    for row in range(rows):
        fields = [str(rng.integers(1, 400)), str(rng.integers(1, 900)), f"{rng.integers(1, 11) / 2:g}",
                  str(874_000_000 + row)]
        roll = rng.random()
        if roll < 0.002:
            fields[1] = "x7"  # not an integer
        elif roll < 0.004:
            fields[2] = "9"  # out of range
        elif roll < 0.005:
            fields = fields[:2]  # too few fields
        elif roll < 0.006:
            lines.append("")  # a blank line still counts
        elif roll < 0.007:
            fields[3] = ""  # an empty timestamp reads as 0
        lines.append(delimiter.join(fields) + ("\r" if roll > 0.995 else ""))
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("fmt", ["udata", "dat", "csv"])
def test_blocks_read_fast_match_the_line_by_line_reader_row_for_row(tmp_path, monkeypatch, fmt):
    from recsys import ingesting

    name = {"udata": "u.data", "dat": "ratings.dat", "csv": "ratings.csv"}[fmt]
    src = tmp_path / name
    _messy_file(src, fmt, 6_000, seed=len(fmt))
    outcomes = []
    parse = ingesting._BlockReader._fast
    monkeypatch.setattr(ingesting._BlockReader, "_fast",
                        lambda self, data, count: outcomes.append(parse(self, data, count)) or outcomes[-1])
    fast = ingesting.read_ratings(src, block_bytes=2_048)  # many blocks, most clean, some not
    clean = sum(outcome is not None for outcome in outcomes)
    assert 0 < clean < len(outcomes) and clean > len(outcomes) // 3  # both paths ran
    monkeypatch.setattr(ingesting._BlockReader, "_arrow_options", staticmethod(lambda *a, **k: None))
    slow = ingesting.read_ratings(src, block_bytes=1 << 30)  # one block, every line by hand
    assert len(fast) > 5_000 and len(fast) == len(slow)
    for column in ("users", "items", "ratings", "timestamps", "lines"):
        assert np.array_equal(getattr(fast, column), getattr(slow, column)), column
    assert [str(b) for b in fast.bad_rows] == [str(b) for b in slow.bad_rows] and len(fast.bad_rows) > 10
    text = src.read_text().splitlines()
    for bad in fast.bad_rows:  # each names the line it is on
        line = text[bad.line - 1]
        assert ("x7" in line) == ("'x7'" in bad.reason) and ("found 2" in bad.reason) == (line.count(
            {"udata": "\t", "dat": "::", "csv": ","}[fmt]) == 1)


def test_a_row_split_across_reads_is_read_whole(tmp_path):
    from recsys import ingesting

    src = tmp_path / "u.data"
    src.write_text("".join(f"{u}\t{u + 1}\t4\t{1000 + u}\n" for u in range(500)))
    table = ingesting.read_ratings(src, block_bytes=7)  # smaller than one line: blocks grow to a line end
    assert table.users.tolist() == list(range(500)) and table.lines.tolist() == list(range(1, 501))
    assert not table.bad_rows
