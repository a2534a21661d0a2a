"""CLI verbs: ``lichen build`` (an OCI image), ``lichen render helm|kubernetes`` (a chart or manifests) and
``lichen deploy`` (``helm upgrade --install`` of that chart)."""

from __future__ import annotations

import difflib
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from lichen.cli.output import console, print_json
from lichen.errors import ConfigError, SpecError

render_app = typer.Typer(help="Render the app for Kubernetes: a Helm chart or plain manifests.", no_args_is_help=True)
AppArg = Annotated[Path, typer.Argument(help="The app directory or its lichen.yaml.")]
MARKER = ".lichen-rendered"
"""a file in every directory `lichen render` writes: only such a directory is ever replaced"""


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the root app."""
    app.command("build")(build)
    app.add_typer(render_app, name="render")
    render_app.command("helm")(render_helm)
    render_app.command("kubernetes")(render_kubernetes)
    app.command("deploy")(deploy)


def _load(app_path: Path) -> tuple[Any, Path, Path]:
    from lichen.cli.jobs import load_app, resolve_spec_path

    spec, app_dir = load_app(app_path)
    return spec, app_dir, resolve_spec_path(app_path)


def _context(app_path: Path, tag: str | None = None) -> Any:
    """Everything rendering needs, from the spec and the files it names; a refusal is located in lichen.yaml."""
    from lichen.deploy.workloads import RenderRefused
    from lichen.deploy.images import app_revision
    from lichen.deploy.rendering import check_renderable, render_context
    from lichen.spec.documents import parse_document

    spec, app_dir, spec_path = _load(app_path)
    try:
        ctx = render_context(spec, app_dir, tag or app_revision(app_dir, spec.kubernetes.base_image))
        check_renderable(ctx)
    except RenderRefused as exc:
        doc, _ = parse_document(spec_path.read_text(encoding="utf-8"), str(spec_path))
        if doc is None:
            raise ConfigError(exc.message, where=str(spec_path)) from None
        raise SpecError([doc.issue(exc.path, exc.message)]) from None
    return ctx


def write_tree(out: Path, files: dict[str, str]) -> None:
    """Write ``files`` as the directory ``out``, all or nothing: into a sibling first, then swapped in. An
    existing ``out`` is replaced only when `lichen render` wrote it (it holds the marker file)."""
    out = out.absolute()
    if out.exists() and not (out / MARKER).is_file():
        if not out.is_dir() or any(out.iterdir()):
            raise ConfigError("exists and was not written by `lichen render`; not overwriting it (choose another "
                              "--out or remove it)", where=str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, text in {**files, MARKER: "written by `lichen render`; the whole directory is replaced on the "
                                            "next render\n"}.items():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        os.chmod(staging, 0o755)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        old.rmdir()
        out.rename(old)
    try:
        staging.rename(out)
    except BaseException:
        if old is not None:  # put the previous one back: never leave no directory at all
            old.rename(out)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build(
    app_path: AppArg = Path("."),
    tag: Annotated[str | None, typer.Option("--tag", "-t", help="Image name, NAME or NAME:TAG (default: "
                                            "[kubernetes.image_registry/]APP:REVISION).")] = None,
    base: Annotated[str | None, typer.Option("--base", help="Base image (default: kubernetes.base_image).")] = None,
    builder: Annotated[str | None, typer.Option("--builder", help="podman, docker or buildah (default: the first "
                                                "found).")] = None,
    push: Annotated[bool, typer.Option("--push", help="Push the image after building it.")] = False,
    print_only: Annotated[bool, typer.Option("--print", help="Print the Containerfile and build nothing.")] = False,
    context_dir: Annotated[Path | None, typer.Option("--context", help="Stage the build context in this new "
                                                     "directory and build nothing (to build elsewhere).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Build the app's OCI image: multi-stage, dependencies in their own layer, a numeric non-root user, no state
    or secrets inside, `lichen serve` as its entrypoint (the service is its argument or LICHEN_SERVICE).

    The tag is the app revision, a digest of everything in the image.

    Example: lichen build examples/recsys && podman run -p 8000:8000 recsys:REVISION recommender
    """
    from lichen.deploy import images

    spec, app_dir, _ = _load(app_path)
    base_image = base or spec.kubernetes.base_image
    if builder is not None and builder not in images.BUILDERS:
        raise ConfigError(f"must be one of {', '.join(images.BUILDERS)}, got {builder!r}", where="--builder")
    if context_dir is not None and context_dir.exists():
        raise ConfigError("already exists; --context stages into a new directory", where=str(context_dir))
    with tempfile.TemporaryDirectory(prefix="lichen-build-") as scratch:
        staged = images.stage_context(spec.app, app_dir, context_dir or Path(scratch) / "context", base_image)
        reference = images.image_reference(spec.app, spec.kubernetes.image_registry, staged.tag, tag)
        if print_only:
            print(staged.containerfile, end="")
            return
        result: dict[str, Any] = {"app": spec.app, "image": reference, "revision": staged.tag,
                                  "base_image": base_image}
        if context_dir is not None:
            result["context"] = str(context_dir.absolute())
            result["command"] = shlex.join(images.build_command("podman", context_dir, reference, base_image))
            _finish(result, as_json, f"staged the build context in {context_dir}; build it with:\n  "
                                     f"{result['command']}")
            return
        tool = images.find_builder(builder)
        started = time.monotonic()
        _run(images.build_command(tool, staged.directory, reference, base_image), as_json, "build")
        result.update(builder=tool, build_s=round(time.monotonic() - started, 1))
        if push:
            _run([tool, "push", reference], as_json, "push")
            result["pushed"] = True
    _finish(result, as_json, f"built {reference} with {tool} in {result['build_s']:g} s"
                             + (" and pushed it" if push else ""))


def _run(command: list[str], quiet: bool, what: str) -> None:
    from lichen.deploy.images import run_builder

    tail: list[str] = []

    def on_line(line: str) -> None:
        tail.append(line)
        del tail[:-20]
        if not quiet:
            console.print(line, markup=False, highlight=False, style="dim")

    code = run_builder(command, on_line)
    if code != 0:
        shown = "\n  ".join(tail[-8:])
        raise ConfigError(f"{what} failed (exit {code}): {shlex.join(command)}\n  {shown}", where=f"lichen {what}")


def _finish(result: dict[str, Any], as_json: bool, text: str) -> None:
    if as_json:
        print_json(result)
    else:
        console.print(text, markup=False, highlight=False)


OutOption = Annotated[Path, typer.Option("--out", "-o", help="The directory to write (replaced as a whole).")]
TagOption = Annotated[str | None, typer.Option("--tag", help="The image tag the chart uses (default: the app "
                                               "revision, as `lichen build` tags it).")]


def render_helm(app_path: AppArg = Path("."), out: OutOption = Path("chart"), tag: TagOption = None,
                as_json: Annotated[bool, typer.Option("--json", help="Print what was written as JSON.")] = False,
                ) -> None:
    """Render a Helm chart from lichen.yaml: Deployments (or Argo Rollouts / Flagger Canaries), Services, HPAs,
    PDBs, NetworkPolicies, the gateway with an Ingress or HTTPRoute, Jobs and CronJobs, ServiceMonitors, a
    PrometheusRule with the rules `lichen up` evaluates, a Grafana dashboard, values.yaml and its schema.

    Example: lichen render helm examples/recsys --out chart && helm install recsys ./chart
    """
    from lichen.deploy.charts import chart_files

    ctx = _context(app_path, tag)
    files = chart_files(ctx)
    write_tree(out, files)
    _finish({"out": str(out.absolute()), "files": sorted(files), "image_tag": ctx.image_tag}, as_json,
            f"wrote a chart of {len(files)} files for {ctx.app} (image tag {ctx.image_tag}) to {out}")


def render_kubernetes(
    app_path: AppArg = Path("."),
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write one file per part into this directory "
                                             "(default: every manifest on stdout).")] = None,
    tag: TagOption = None,
) -> None:
    """Render plain Kubernetes manifests from lichen.yaml: what the Helm chart gives with its default values.

    Example: lichen render kubernetes examples/recsys | kubectl apply -f -
    """
    from lichen.deploy.charts import manifest_files

    files = manifest_files(_context(app_path, tag))
    if out is None:
        print("---\n".join(files[name] for name in sorted(files)), end="")
        return
    write_tree(out, files)
    console.print(f"wrote {len(files)} manifest files to {out}", markup=False, highlight=False)


def helm_binary(given: str | None) -> str:
    named = given or os.environ.get("LICHEN_HELM")
    where = "--helm" if given else "LICHEN_HELM" if named else "helm"
    found = shutil.which(named or "helm")
    if not found:
        what = f"{named!r} is not an executable" if named else "helm is not on PATH"
        raise ConfigError(f"{what}: install Helm 3 or 4, or point --helm or LICHEN_HELM at it", where=where)
    return found


def deploy(
    app_path: AppArg = Path("."),
    kube_context: Annotated[str | None, typer.Option("--context", help="The kubeconfig context to deploy to.")] = None,
    namespace: Annotated[str | None, typer.Option("--namespace", "-n", help="Namespace (default: "
                                                  "kubernetes.namespace).")] = None,
    release: Annotated[str | None, typer.Option("--release", help="Helm release name (default: the app).")] = None,
    values: Annotated[list[Path] | None, typer.Option("--values", "-f", help="Extra values files for helm.")] = None,
    tag: TagOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the diff against the deployed release and the "
                                          "helm command; change nothing.")] = False,
    helm: Annotated[str | None, typer.Option("--helm", help="The helm binary (default: LICHEN_HELM, else helm on "
                                             "PATH).")] = None,
) -> None:
    """Deploy the app's chart with `helm upgrade --install` (atomic: a failed upgrade rolls back).

    Example: lichen deploy examples/recsys --context kind-lichen --dry-run
    """
    from lichen.deploy.charts import chart_files

    for path in values or []:
        if not path.is_file():
            raise ConfigError("no such values file", where=str(path))
    ctx = _context(app_path, tag)
    binary = helm_binary(helm)
    name = release or ctx.app
    ns = namespace or ctx.spec.kubernetes.namespace
    with tempfile.TemporaryDirectory(prefix="lichen-deploy-") as scratch:
        chart = Path(scratch) / ctx.app
        write_tree(chart, chart_files(ctx))
        where = [*(["--kube-context", kube_context] if kube_context else []), "--namespace", ns]
        extra = [arg for path in values or [] for arg in ("--values", str(path.absolute()))]
        command = [binary, "upgrade", "--install", name, str(chart), *where, "--create-namespace", "--atomic",
                   "--wait", "--timeout", "10m", *extra]
        if not dry_run:
            from lichen.runtime.audit_logs import record_cli_action

            code = subprocess.call(command)
            record_cli_action(_load(app_path)[1] / ".lichen", "deploy", {"release": name, "namespace": ns,
                              "context": kube_context, "image_tag": ctx.image_tag}, "ok" if code == 0 else "error",
                              "" if code == 0 else f"helm exited with {code}")
            raise typer.Exit(code)
        new = subprocess.run([binary, "template", name, str(chart), "--namespace", ns, *extra],
                             capture_output=True, text=True)
        if new.returncode != 0:
            raise ConfigError(f"helm template failed: {new.stderr.strip()}", where="lichen deploy")
        old = subprocess.run([binary, "get", "manifest", name, *where], capture_output=True, text=True)
        current = old.stdout if old.returncode == 0 else ""
        if old.returncode != 0:
            console.print(f"# no deployed release {name!r} could be read ({old.stderr.strip().splitlines()[-1] if old.stderr.strip() else 'no output'}); "
                          "every object is new", markup=False, highlight=False)
        diff = difflib.unified_diff(current.splitlines(), new.stdout.splitlines(), f"{name} (deployed)",
                                    f"{name} (rendered)", lineterm="")
        for line in diff:
            console.print(line, markup=False, highlight=False,
                          style="green" if line.startswith("+") else "red" if line.startswith("-") else None)
        shown = [*command[:4], f"<chart rendered from {ctx.app}>", *command[5:]]
        console.print("\n# would run:\n" + shlex.join(shown), markup=False, highlight=False)
