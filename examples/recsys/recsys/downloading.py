"""Fetching MovieLens 100K from GroupLens on the user's machine.

The zip's own checksum is not published, so the archive is unpacked into a
temporary directory and ``u.data`` is verified against its known sha256
before the directory is renamed into place. Without a network the caller
falls back to synthetic data (and says so).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from lichen import DataError, atomic_output

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
URL_ENV = "RECSYS_ML100K_URL"
UDATA_SHA256 = "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"


class DownloadUnavailable(OSError):
    """The source could not be reached (no network, DNS, refused, timeout)."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_ml100k(cache_dir: str | Path, *, url: str | None = None, timeout_s: float = 20.0,
                 expected_sha256: str = UDATA_SHA256) -> Path:
    """Return the path of a verified ``u.data`` under ``cache_dir/ml-100k``,
    downloading it when it is not there yet."""
    url = url or os.environ.get(URL_ENV) or ML100K_URL
    target = Path(cache_dir) / "ml-100k"
    udata = target / "u.data"
    if udata.is_file() and sha256_file(udata) == expected_sha256:
        return udata
    archive = Path(cache_dir) / "ml-100k.zip"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, atomic_output(archive) as tmp:
            with tmp.open("wb") as out:
                shutil.copyfileobj(response, out)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        raise DownloadUnavailable(f"cannot download {url}: {getattr(err, 'reason', err)}") from err
    try:
        with atomic_output(target, directory=True) as tmp_dir, zipfile.ZipFile(archive) as zipped:
            for member in zipped.infolist():
                name = Path(member.filename)
                if member.is_dir() or name.name.startswith(".") or ".." in name.parts:
                    continue
                with zipped.open(member) as src, (tmp_dir / name.name).open("wb") as dst:
                    shutil.copyfileobj(src, dst)
            got = tmp_dir / "u.data"
            if not got.is_file():
                raise DataError("the archive has no u.data", where=url)
            actual = sha256_file(got)
            if actual != expected_sha256:
                raise DataError(f"u.data sha256 mismatch: expected {expected_sha256}, got {actual}", where=url)
    except zipfile.BadZipFile as err:
        raise DataError(f"not a zip archive ({err})", where=url) from err
    finally:
        archive.unlink(missing_ok=True)
    return udata
