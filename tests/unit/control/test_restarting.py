"""Restart decisions as data: a replica's exit, and a supervised process's (the gateway's) pass by pass."""

from __future__ import annotations

from lichen.control.restarting import (
    UNKNOWN_EXIT,
    EventNote,
    SupervisedState,
    replica_exit,
    start_failed,
    started,
    supervise,
)
from lichen.spec.models import RestartSpec

RESTART = RestartSpec(initial_backoff_s=10, max_backoff_s=40, reset_after_s=60)


def test_a_replica_exit_says_why_and_when_it_restarts() -> None:
    first = replica_exit(3, oom=False, stop_reason="", then_restart=False, ran_for_s=2.0, crash_count=0, restart=RESTART)
    assert (first.planned, first.reason, first.exit_code, first.crash_count, first.restart_delay_s) == (
        False, "Error", 3, 1, 0.0)
    assert first.event == EventNote("Exited", "Error", "exit code 3 after 2.0s; restart in 0s")
    second = replica_exit(3, oom=True, stop_reason="", then_restart=False, ran_for_s=1.0, crash_count=1, restart=RESTART)
    assert (second.reason, second.crash_count, second.restart_delay_s, second.event.kind) == ("OOMKilled", 2, 10.0,
                                                                                              "OOMKilled")
    killed = replica_exit(-9, oom=False, stop_reason="", then_restart=False, ran_for_s=1.0, crash_count=2,
                          restart=RESTART)
    assert (killed.reason, killed.restart_delay_s) == ("Killed", 20.0) and "signal 9" in killed.event.message
    healthy_run = replica_exit(0, oom=False, stop_reason="", then_restart=False, ran_for_s=61.0, crash_count=5,
                               restart=RESTART)
    assert (healthy_run.reason, healthy_run.crash_count) == ("Completed", 1)  # a fresh loop after a long run
    liveness = replica_exit(-9, oom=False, stop_reason="", then_restart=True, ran_for_s=5.0, crash_count=0,
                            restart=RESTART)
    assert liveness.reason == "LivenessFailed" and not liveness.planned


def test_a_planned_stop_is_forgotten_and_an_adopted_exit_code_is_unknown() -> None:
    stop = replica_exit(0, oom=False, stop_reason="ScaledDown", then_restart=False, ran_for_s=9.0, crash_count=0,
                        restart=RESTART)
    assert stop.planned and stop.event == EventNote("Stopped", "ScaledDown", "exit code 0")
    lost = replica_exit(UNKNOWN_EXIT, oom=False, stop_reason="", then_restart=False, ran_for_s=1.0, crash_count=0,
                        restart=RESTART)
    assert (lost.reason, lost.exit_code) == ("Error", None) and lost.event.message.startswith("unknown (adopted)")


def test_a_supervised_process_starts_restarts_at_once_then_backs_off() -> None:
    state = SupervisedState()
    step = supervise(state, running=False, exit_code=None, now=100.0, stopping=False, restart=RESTART, grace_s=12)
    assert step.start and step.events == ()
    state = started(step.state, 100.0)
    step = supervise(state, running=True, exit_code=None, now=101.0, stopping=False, restart=RESTART, grace_s=12)
    assert (step.start, step.signal, step.state) == (False, None, state)  # running: leave it
    step = supervise(state, running=True, exit_code=1, now=102.0, stopping=False, restart=RESTART, grace_s=12)
    assert step.start and step.events == (EventNote("Exited", "Error", "exit code 1; restart in 0s"),)
    assert (step.state.crash_count, step.state.exited_at, step.state.last_exit_code) == (1, 102.0, 1)
    state = started(step.state, 102.0)
    step = supervise(state, running=True, exit_code=1, now=103.0, stopping=False, restart=RESTART, grace_s=12)
    assert not step.start and step.wake_at == 113.0  # the second crash waits initial_backoff_s
    assert step.events == (EventNote("Exited", "Error", "exit code 1; restart in 10s"),)
    waiting = supervise(step.state, running=False, exit_code=None, now=112.9, stopping=False, restart=RESTART,
                        grace_s=12)
    assert not waiting.start and waiting.wake_at == 113.0
    due = supervise(step.state, running=False, exit_code=None, now=113.0, stopping=False, restart=RESTART, grace_s=12)
    assert due.start and due.wake_at is None


def test_shutdown_sends_sigterm_then_sigkill_after_the_grace_period_and_never_restarts() -> None:
    state = started(SupervisedState(), 0.0)
    term = supervise(state, running=True, exit_code=None, now=10.0, stopping=True, restart=RESTART, grace_s=12)
    assert term.signal == "SIGTERM" and term.state.kill_at == 22.0
    assert supervise(term.state, running=True, exit_code=None, now=21.0, stopping=True, restart=RESTART,
                     grace_s=12).signal is None
    assert supervise(term.state, running=True, exit_code=None, now=22.0, stopping=True, restart=RESTART,
                     grace_s=12).signal == "SIGKILL"
    gone = supervise(term.state, running=True, exit_code=0, now=23.0, stopping=True, restart=RESTART, grace_s=12)
    assert gone.events == (EventNote("Stopped", "shutdown", "exit code 0"),) and not gone.start
    assert gone.state.kill_at is None
    assert not supervise(gone.state, running=False, exit_code=None, now=30.0, stopping=True, restart=RESTART,
                         grace_s=12).start


def test_a_failed_start_counts_as_a_crash() -> None:
    state = start_failed(SupervisedState(crash_count=1), 50.0, RESTART)
    assert (state.crash_count, state.exited_at) == (2, 50.0)
    step = supervise(state, running=False, exit_code=None, now=50.0, stopping=False, restart=RESTART, grace_s=12)
    assert step.wake_at == 60.0
