"""Chaos experiment files checked against the app before anything is injected: every problem located."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lichen.errors import SpecError
from lichen.spec.experiments import NOT_BUILT, load_experiment, receiver_names
from lichen.spec.models import AppSpec

APP = AppSpec.model_validate({
    "app": "t", "services": {"web": {"entrypoint": "svc:Svc"}},
    "observability": {"receivers": [{"name": "hook", "webhook": "http://127.0.0.1:9/hook"}, {"log": True}]}})
BARE = AppSpec.model_validate({"app": "t", "services": {"web": {"entrypoint": "svc:Svc"}}})


def _load(tmp_path: Path, faults: list[dict], hypotheses: list[str] = (), app: AppSpec = APP):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "duration": "10s", "faults": faults, "hypotheses": list(hypotheses)}))
    return load_experiment(path, app)


def _issues(tmp_path: Path, *args, **kwargs) -> list[str]:
    with pytest.raises(SpecError) as caught:
        _load(tmp_path, *args, **kwargs)
    return [str(issue) for issue in caught.value.issues]


def test_receiver_down_names_a_receiver_of_the_app(tmp_path: Path) -> None:
    experiment = _load(tmp_path, [{"kind": "receiver_down", "receiver": "log-1", "at": "1s", "for_s": "5s"}],
                       ["no notification lost", "notifications lost <= 1"])
    assert experiment.faults[0].receiver == "log-1"
    assert [h.measure for h in experiment.parsed_hypotheses()] == ["notifications_lost"] * 2
    (issue,) = _issues(tmp_path, [{"kind": "receiver_down", "receiver": "pager", "at": "1s", "for_s": "5s"}])
    assert "exp.yaml:" in issue and "faults[0].receiver" in issue
    assert "no alert receiver 'pager' (observability.receivers: hook, log-1)" in issue


@pytest.mark.parametrize(("fault", "where", "message"), [
    ({"kind": "receiver_down", "at": "1s", "for_s": "5s"}, "faults[0]", "receiver: required for receiver_down"),
    ({"kind": "receiver_down", "receiver": "hook", "at": "1s"}, "faults[0]", "for_s: required for receiver_down"),
    ({"kind": "kill_gateway", "receiver": "hook", "at": "1s"}, "faults[0]", "only receiver_down takes it"),
    ({"kind": "receiver_down", "receiver": "hook", "service": "web", "at": "1s", "for_s": "1s"}, "faults[0]",
     "receiver_down takes no service"),
    ({"kind": "pause_dependency", "at": "1s", "for_s": "5s"}, "faults[0]", "port: required for pause_dependency"),
    ({"kind": "pause_dependency", "port": 6379, "at": "1s"}, "faults[0]", "for_s: required for pause_dependency"),
    ({"kind": "pause_dependency", "port": 70000, "at": "1s", "for_s": "1s"}, "faults[0].port",
     "must be <= 65535, got 70000"),
    ({"kind": "kill_gateway", "port": 6379, "at": "1s"}, "faults[0]", "only pause_dependency takes it"),
    ({"kind": "bandwidth", "service": "web", "at": "1s", "for_s": "5s"}, "faults[0]",
     "rate_kbps: required for bandwidth"),
    ({"kind": "bandwidth", "service": "web", "at": "1s", "for_s": "5s", "rate_kbps": 0}, "faults[0].rate_kbps",
     "must be > 0"),
    ({"kind": "latency", "service": "web", "at": "1s", "for_s": "5s", "delay_ms": 5, "rate_kbps": 8}, "faults[0]",
     "only bandwidth takes it"),
    ({"kind": "bandwidth", "at": "1s", "for_s": "5s", "rate_kbps": 8}, "faults[0]", "service: required for bandwidth"),
    ({"kind": "slow_disk", "at": "1s", "for_s": "5s"}, "faults[0]", "delay_ms: required for slow_disk"),
    ({"kind": "slow_disk", "at": "1s", "for_s": "5s", "delay_ms": 20000}, "faults[0]", "at most 10000 for slow_disk"),
    ({"kind": "full_disk", "at": "1s"}, "faults[0]", "for_s: required for full_disk"),
    ({"kind": "full_disk", "at": "1s", "for_s": "5s", "delay_ms": 5}, "faults[0]", "only latency and slow_disk"),
    ({"kind": "full_disk", "service": "web", "at": "1s", "for_s": "5s"}, "faults[0]", "full_disk takes no service"),
])
def test_a_fault_that_does_not_fit_its_kind_is_located(tmp_path: Path, fault: dict, where: str,
                                                                 message: str) -> None:
    (issue,) = _issues(tmp_path, [fault])
    assert where in issue and message in issue, issue


def test_kinds_not_built_yet_are_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(NOT_BUILT, "flood", "the machine room under water")  # every kind the issue names is built
    (issue,) = _issues(tmp_path, [{"kind": "flood", "at": "1s"}])
    assert "faults[0].kind" in issue and "flood (the machine room under water) is not built yet" in issue, issue
    (unknown,) = _issues(tmp_path, [{"kind": "meteor", "at": "1s"}])
    assert "faults[0].kind" in unknown and "expected one of" in unknown and "full_disk" in unknown, unknown


def test_no_notification_lost_cannot_be_evaluated_without_receivers(tmp_path: Path) -> None:
    (issue,) = _issues(tmp_path, [{"kind": "kill_gateway", "at": "1s"}], ["p99 < 1s", "no notification lost"],
                       app=BARE)
    assert "hypotheses[1]" in issue and "has no observability.receivers" in issue, issue


def test_receiver_names_are_the_notifiers() -> None:
    from lichen.observe.notifications import receivers_from_spec

    app = AppSpec.model_validate({"app": "t", "services": {"web": {"entrypoint": "svc:Svc"}}, "observability": {
        "receivers": [{"webhook": "http://a/"}, {"name": "am", "alertmanager": "http://b/"}, {"log": True},
                      {"alertmanager": "http://c/"}]}})
    assert receiver_names(app) == [r.name for r in receivers_from_spec(app)] == ["webhook-0", "am", "log-2",
                                                                                  "alertmanager-3"]


def test_a_dependency_that_cannot_be_paused_is_located_at_its_port(tmp_path: Path) -> None:
    fault = {"kind": "pause_dependency", "port": 6379, "at": "1s", "for_s": "5s"}
    assert _load(tmp_path, [fault]).faults[0].port == 6379  # without a check (lichen validate-like use)
    path = tmp_path / "exp.yaml"
    asked: list[int] = []
    assert load_experiment(path, APP, check_port=lambda port: asked.append(port)).faults[0].port == 6379
    with pytest.raises(SpecError) as caught:
        load_experiment(path, APP, check_port=lambda port: f"no process listens on TCP port {port}")
    (issue,) = [str(i) for i in caught.value.issues]
    assert asked == [6379] and "exp.yaml:" in issue and "faults[0].port" in issue and "TCP port 6379" in issue
