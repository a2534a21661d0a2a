"""The ``remediation:`` section of ``lichen.yaml``: alerts mapped to repairs, with the limits that keep them safe."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from lichen.spec.bases import Name, SpecModel, _positive
from lichen.spec.quantities import Duration

Action = Literal["restart_replica", "rollback", "scale_up", "drain_replica", "run_job"]


class RemediationRuleSpec(SpecModel):
    alert: Annotated[str, Field(min_length=1)]
    """the alert's name (its ``alertname``)"""
    labels: dict[str, str] = Field(default_factory=dict)
    """more labels the alert must carry, exactly (e.g. ``{severity: page}``)"""
    action: Action
    scale_by: Annotated[int, Field(ge=1)] = 1
    """scale_up: replicas added"""
    job: Name | None = None
    """run_job: the job to run (``lichen run JOB``)"""
    within_s_of_rollout: Duration | None = None
    """act only while the service's last rollout began at most this long ago (None: any time)"""
    cooldown_s: Duration = 300.0
    """after this rule acted on a service, it waits this long before acting on it again"""

    _cooldown_positive = field_validator("cooldown_s")(_positive)

    @model_validator(mode="after")
    def _job_for_run_job(self) -> RemediationRuleSpec:
        if self.action == "run_job" and not self.job:
            raise ValueError("job: run_job needs the job to run")
        if self.action != "run_job" and self.job:
            raise ValueError(f"job: only run_job runs a job (this rule's action is {self.action})")
        return self


class RemediationSpec(SpecModel):
    enabled: bool = True
    dry_run: bool = False
    """record what would be done (events), do nothing"""
    defaults: bool = True
    """add the default pack: a fast burn of the error budget, or a high error ratio, within 15 minutes of a
    rollout rolls the service back"""
    max_actions: Annotated[int, Field(ge=1)] = 5
    """the most actions taken (all rules, all services) within ``window_s``"""
    window_s: Duration = 3600.0
    rules: list[RemediationRuleSpec] = Field(default_factory=list)

    _window_positive = field_validator("window_s")(_positive)


DEFAULT_RULES = (
    RemediationRuleSpec(alert="LichenErrorBudgetBurn", labels={"severity": "page"}, action="rollback",
                        within_s_of_rollout=900.0, cooldown_s=900.0),
    RemediationRuleSpec(alert="LichenHighErrorRatio", action="rollback", within_s_of_rollout=900.0,
                        cooldown_s=900.0),
)
"""The default pack (``remediation.defaults``): a service that started failing within 15 minutes of a rollout
goes back to the revision before it (a canary in progress is aborted)."""
