"""Which process pause_dependency may stop: decided from plain data about the port's listeners."""

from __future__ import annotations

import pytest

from lichen.control.dependency_faults import Listener, Refused, dependency_pids, describe

ME = 1000


def test_the_current_users_process_on_the_port_is_stopped() -> None:
    listeners = [Listener(41, "redis-server", ME), Listener(40, "redis-server", ME), Listener(41, "redis-server", ME)]
    assert dependency_pids(6379, listeners, ME) == [40, 41]
    assert describe(6379, listeners) == "redis-server:6379"


@pytest.mark.parametrize(("listeners", "message"), [
    ([], "no process listens on TCP port 6379 on this machine"),
    ([Listener(None)], "a process of another user listens on TCP port 6379"),
    ([Listener(7, "python3", ME, lichen=True)], "belongs to python3 (pid 7), one of Lichen's own processes"),
    ([Listener(8, "redis-server", 0)], "of user id 0, not the current user (1000)"),
    ([Listener(8, "redis-server", ME), Listener(9, "?", None)], "of user id None, not the current user"),
])
def test_nothing_lichens_or_another_users_is_refused(listeners: list[Listener], message: str) -> None:
    with pytest.raises(Refused, match=message.replace("(", r"\(").replace(")", r"\)")):
        dependency_pids(6379, listeners, ME)
