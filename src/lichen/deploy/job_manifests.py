"""The app's jobs in the cluster: a CronJob for every ``schedule``, a Job for every other job.

A job runs as under ``lichen run``: ``python -m lichen.runtime.job_process
module:function -- ARGS`` in the app directory, with its resources, env and
secrets, ``retries`` as ``backoffLimit`` and ``timeout_s`` as
``activeDeadlineSeconds`` of each pod (one attempt, as ``lichen run`` times
each attempt; the Job as a whole gets every attempt's time). With
``jobs.runOnInstall`` (off by default) every job is also a Helm hook run
after each install and upgrade, ordered by ``depends_on``: a job's hook
weight is its depth in the dependency graph, and Helm waits for every hook
of one weight to finish before it starts the next, the order ``lichen run``
keeps.
"""

from __future__ import annotations

from typing import Any

from lichen.control.placing import thread_caps
from lichen.deploy.chart_values import Condition, Manifest, value
from lichen.deploy.workloads import (
    APP_DIR,
    STATE_MOUNTS,
    RenderContext,
    container_security,
    pod_security,
    resources,
    secret_env,
    state_volumes,
    whole_seconds,
)
from lichen.spec.models import JobSpec

CONCURRENCY = {"forbid": "Forbid", "allow": "Allow", "replace": "Replace"}


def job_depths(jobs: dict[str, JobSpec]) -> dict[str, int]:
    """Each job's depth in the ``depends_on`` graph: 0 without dependencies, else one more than the deepest."""
    depths: dict[str, int] = {}

    def depth(name: str) -> int:  # validation refuses cycles and unknown names
        if name not in depths:
            depths[name] = 1 + max((depth(dep) for dep in jobs[name].depends_on), default=-1)
        return depths[name]

    for name in jobs:
        depth(name)
    return depths


def job_pod(ctx: RenderContext, name: str, job: JobSpec) -> dict[str, Any]:
    env = [{"name": "PYTHONUNBUFFERED", "value": "1"}, {"name": "LICHEN_JOB", "value": name},
           {"name": "LICHEN_APP_DIR", "value": APP_DIR},
           {"name": "LICHEN_RUN_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    env += [{"name": key, "value": text} for key, text in {**thread_caps(job.resources.cpu), **job.env}.items()]
    env += secret_env(ctx, job.secrets)
    container = {
        "name": name,
        "image": ctx.image(),
        "imagePullPolicy": value("image.pullPolicy", "IfNotPresent"),
        "command": ["python", "-m", "lichen.runtime.job_process", job.entrypoint, "--", *job.args],
        "workingDir": APP_DIR,
        "env": env,
        "resources": value(f"jobs.{name}.resources",
                           resources(job.resources.cpu, job.resources.memory, job.resources.gpu), block=True),
        "securityContext": container_security(ctx),
        "volumeMounts": STATE_MOUNTS,
    }
    pod: dict[str, Any] = {"automountServiceAccountToken": False, "enableServiceLinks": False,
                           "restartPolicy": "Never", "securityContext": pod_security(ctx),
                           "containers": [container], "volumes": state_volumes(ctx)}
    if job.timeout_s is not None:
        pod["activeDeadlineSeconds"] = whole_seconds(job.timeout_s)
    return {"metadata": {"labels": ctx.labels(name)}, "spec": pod}


def job_spec(ctx: RenderContext, name: str, job: JobSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"backoffLimit": job.retries, "template": job_pod(ctx, name, job)}
    if job.timeout_s is not None:
        out["activeDeadlineSeconds"] = whole_seconds(job.timeout_s) * (job.retries + 1)
    return out


def job_manifests(ctx: RenderContext) -> list[Manifest]:
    jobs = ctx.spec.jobs
    depths = job_depths(jobs)
    out = []
    for name, job in jobs.items():
        if job.schedule:
            spec: dict[str, Any] = {
                "schedule": job.schedule, "timeZone": "Etc/UTC",
                "concurrencyPolicy": CONCURRENCY[job.concurrency_policy],
                "successfulJobsHistoryLimit": job.successful_runs_kept,
                "failedJobsHistoryLimit": job.failed_runs_kept,
                "jobTemplate": {"metadata": {"labels": ctx.labels(name)}, "spec": job_spec(ctx, name, job)},
            }
            if job.starting_deadline_s is not None:
                spec["startingDeadlineSeconds"] = whole_seconds(job.starting_deadline_s)
            out.append(Manifest("cronjobs.yaml", {"apiVersion": "batch/v1", "kind": "CronJob",
                                                  "metadata": ctx.metadata(name), "spec": spec}))
        hook = {"helm.sh/hook": "post-install,post-upgrade", "helm.sh/hook-weight": str(depths[name]),
                "helm.sh/hook-delete-policy": "before-hook-creation"}
        out.append(Manifest("jobs.yaml", {"apiVersion": "batch/v1", "kind": "Job",
                                          "metadata": ctx.metadata(name, annotations=hook),
                                          "spec": job_spec(ctx, name, job)},
                            (Condition("jobs.runOnInstall"),)))
    return out
