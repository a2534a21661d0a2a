"""Atomic artifact writes: an output appears whole, or not at all.

``atomic_output(path)`` yields a temporary path beside the target (same
filesystem, so the final rename is atomic). When the ``with`` block ends
normally the temporary is fsynced and renamed into place; when it raises
(including ``KeyboardInterrupt`` from Ctrl-C or the SIGTERM that ``lichen
run`` turns into one, and ``SystemExit``) the temporary is removed and the
target is left exactly as it was.

Under ``lichen run`` the environment variable ``LICHEN_RUN_ARTIFACTS`` names
a manifest file; each committed path is appended to it so ``lichen runs``
can list what a job wrote.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ARTIFACTS_ENV = "LICHEN_RUN_ARTIFACTS"
TEMP_SUFFIX = ".lichen-tmp"
_RENAME_EXCHANGE = 2  # linux/fs.h


def temp_path_for(final: Path) -> Path:
    """A hidden sibling of ``final``, tagged with our pid for stale sweeps."""
    return final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


@contextmanager
def atomic_output(path: str | os.PathLike[str], directory: bool = False) -> Iterator[Path]:
    """Write ``path`` atomically; yields the temporary path to write to.

    Example::

        with atomic_output("data/interactions.parquet") as tmp:
            frame.to_parquet(tmp)
        with atomic_output("models/ease", directory=True) as tmp_dir:
            numpy.save(tmp_dir / "weights.npy", weights)

    For a directory that already exists the old one is swapped out in one
    ``renameat2(RENAME_EXCHANGE)`` where the kernel supports it (readers see
    the old tree or the new one, never neither), else renamed aside first.
    """
    final = Path(path).absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(final)
    if directory:
        tmp.mkdir(mode=0o755)
    else:
        tmp.touch(mode=0o644, exist_ok=False)
    try:
        yield tmp
        if directory:
            fsync_tree(tmp)
            _replace_directory(tmp, final)
        else:
            fsync_file(tmp)
            os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        remove_path(tmp)
        raise
    record_artifact(final)


def record_artifact(path: str | os.PathLike[str]) -> None:
    """Append ``path`` to the running job's artifact manifest, if any."""
    manifest = os.environ.get(ARTIFACTS_ENV)
    if not manifest:
        return
    line = (str(Path(path).absolute()) + "\n").encode()
    fd = os.open(manifest, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one small O_APPEND write: never interleaved
    finally:
        os.close(fd)


def read_manifest(manifest: str | os.PathLike[str]) -> list[str]:
    """The distinct artifact paths recorded in a manifest, in write order."""
    try:
        lines = Path(manifest).read_text().splitlines()
    except FileNotFoundError:
        return []
    return list(dict.fromkeys(line for line in lines if line.strip()))


def sweep_stale_temps(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove temporaries in ``directory`` left by processes that were killed.

    Only entries whose owning pid is no longer alive are removed, so a
    concurrent writer's temporary is never touched.
    """
    removed: list[Path] = []
    root = Path(directory)
    if not root.is_dir():
        return removed
    for entry in root.iterdir():
        if not entry.name.endswith(TEMP_SUFFIX):
            continue
        parts = entry.name[: -len(TEMP_SUFFIX)].rsplit(".", 2)
        if len(parts) != 3 or not parts[1].isdigit() or _pid_alive(int(parts[1])):
            continue
        remove_path(entry)
        removed.append(entry)
    return removed


def remove_path(path: Path) -> None:
    """Remove a file or a directory tree; missing is fine."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            full = Path(dirpath) / name
            if not full.is_symlink():
                fsync_file(full)
        fsync_dir(Path(dirpath))


def _rename_exchange(src: Path, dst: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False when unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), _RENAME_EXCHANGE)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(dst))


def _replace_directory(tmp: Path, final: Path) -> None:
    if not final.exists() and not final.is_symlink():
        os.rename(tmp, final)
        return
    if final.is_dir() and not final.is_symlink() and _rename_exchange(tmp, final):
        remove_path(tmp)  # tmp now holds the old tree
        return
    aside = temp_path_for(final)
    os.rename(final, aside)
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(aside, final)
        raise
    remove_path(aside)
