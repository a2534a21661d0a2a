"""Building an app's OCI image: staging the build context, naming the image, and calling podman, docker or buildah.

The context is staged in a fresh directory (never in the app's own), as
:mod:`lichen.deploy.containerfiles` lays it out. The image's tag is the
**app revision**: a digest of everything the image is made of (the base
image's name, the requirements, Lichen's code and the app's files), so an
unchanged app gets the same tag and any change a new one.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lichen
from lichen.deploy.containerfiles import IGNORED, containerfile_text, containerignore_text
from lichen.errors import ConfigError

BUILDERS = ("podman", "docker", "buildah")
TAG_LENGTH = 12


@dataclass(frozen=True)
class StagedContext:
    directory: Path
    tag: str
    containerfile: str


def ignored(relative: Path, patterns: tuple[str, ...] = IGNORED) -> bool:
    """Whether any part of ``relative`` matches a .containerignore pattern."""
    return any(fnmatch.fnmatch(part, pattern) for part in relative.parts for pattern in patterns)


def context_files(root: Path, patterns: tuple[str, ...] = IGNORED) -> Iterator[Path]:
    """Regular files under ``root`` that go in the image, sorted (relative paths). A symlink is followed only when
    it stays inside ``root``: one to ``~/.aws/credentials`` never reaches an image."""
    inside = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(d for d in dirnames if not ignored(base / d, patterns)
                             and (root / base / d).resolve().is_relative_to(inside))
        for name in sorted(filenames):
            relative = base / name
            path = root / relative
            if not ignored(relative, patterns) and path.is_file() and path.resolve().is_relative_to(inside):
                yield relative


def lichen_requirements() -> list[str]:
    """Lichen's own runtime dependencies (no extras), pinned to the versions installed here: the image runs what
    was tested, and its tag (a digest of this list) changes when they do."""
    from packaging.requirements import Requirement

    try:
        requires = importlib.metadata.requires("lichen") or []
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError("Lichen is not installed as a package (pip install -e .), so its dependencies are unknown",
                          where="lichen build") from None
    pinned = []
    for text in requires:
        requirement = Requirement(text)
        if requirement.marker is not None and "extra" in str(requirement.marker):
            continue
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:  # not for this platform (a marker): keep the range
            pinned.append(text)
            continue
        marker = f"; {requirement.marker}" if requirement.marker is not None else ""
        pinned.append(f"{requirement.name}=={version}{marker}")
    return pinned


def app_requirements(app_dir: Path) -> list[str]:
    path = app_dir / "requirements.txt"
    if not path.is_file():
        return []
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _digest_tree(digest: hashlib._Hash, root: Path, files: list[Path], label: str) -> None:
    for relative in files:
        digest.update(f"{label}/{relative.as_posix()}\0".encode())
        digest.update((root / relative).read_bytes())
        digest.update(b"\0")


def _revision(app_dir: Path, lichen_dir: Path, app_files: list[Path], lichen_files: list[Path],
              requirements: tuple[str, str], base_image: str) -> str:
    digest = hashlib.sha256()
    digest.update(f"base={base_image}\0".encode())
    digest.update("\0".join(requirements).encode())
    _digest_tree(digest, lichen_dir, lichen_files, "lichen")
    _digest_tree(digest, app_dir, app_files, "app")
    return digest.hexdigest()[:TAG_LENGTH]


def _inputs(app_dir: Path) -> tuple[Path, list[Path], list[Path], tuple[str, str]]:
    lichen_dir = Path(lichen.__file__).resolve().parent
    requirements = ("\n".join(lichen_requirements()) + "\n", "\n".join(app_requirements(app_dir)) + "\n")
    return lichen_dir, list(context_files(app_dir)), list(context_files(lichen_dir)), requirements


def app_revision(app_dir: Path, base_image: str) -> str:
    """The tag ``lichen build`` gives the app's image now."""
    lichen_dir, app_files, lichen_files, requirements = _inputs(app_dir)
    return _revision(app_dir, lichen_dir, app_files, lichen_files, requirements, base_image)


def stage_context(app: str, app_dir: Path, out: Path, base_image: str) -> StagedContext:
    """Stage the build context in ``out`` (created; must not exist) and return it with its tag."""
    lichen_dir, app_files, lichen_files, requirements = _inputs(app_dir)
    tag = _revision(app_dir, lichen_dir, app_files, lichen_files, requirements, base_image)
    out.mkdir(parents=True)
    for source, target, files in ((app_dir, out / "app", app_files), (lichen_dir, out / "lichen", lichen_files)):
        for relative in files:
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / relative, target / relative)
            os.chmod(target / relative, 0o755 if os.access(source / relative, os.X_OK) else 0o644)
    (out / "lichen-requirements.txt").write_text(requirements[0])
    (out / "requirements.txt").write_text(requirements[1])
    containerfile = containerfile_text(app, base_image, tag)
    (out / "Containerfile").write_text(containerfile)
    (out / ".containerignore").write_text(containerignore_text())
    return StagedContext(out, tag, containerfile)


def find_builder(preferred: str | None = None, which: Callable[[str], str | None] = shutil.which) -> str:
    """The first of podman, docker and buildah on PATH (or the one asked for)."""
    for name in ([preferred] if preferred else BUILDERS):
        if which(name):
            return name
    wanted = preferred or " or ".join(BUILDERS)
    raise ConfigError(f"no container builder found: install {wanted}, or use --print / --context to build "
                      "elsewhere", where="lichen build")


def image_reference(app: str, registry: str | None, tag: str, override: str | None = None) -> str:
    """``[REGISTRY/]APP:REVISION``, or ``--tag``: ``NAME`` (the revision is added) or ``NAME:TAG``."""
    if override:
        last = override.rsplit("/", 1)[-1]
        return override if ":" in last else f"{override}:{tag}"
    return f"{registry.rstrip('/')}/{app}:{tag}" if registry else f"{app}:{tag}"


def build_command(builder: str, context: Path, reference: str, base_image: str) -> list[str]:
    verb = ["bud"] if builder == "buildah" else ["build"]
    return [builder, *verb, "--file", str(context / "Containerfile"), "--tag", reference,
            "--build-arg", f"BASE_IMAGE={base_image}", str(context)]


def run_builder(command: list[str], on_line: Callable[[str], None]) -> int:
    """Run a build or push, handing each output line to ``on_line``; the exit code."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               errors="replace")
    assert process.stdout is not None
    for line in process.stdout:
        on_line(line.rstrip("\n"))
    return process.wait()
