"""What the energy meter reads of the machine (lichen.runtime.host_readings): the gateway's requests by a line
scan that agrees with prometheus_client's parser, and a real process tree's CPU time and memory with its live
children."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import psutil
from prometheus_client.parser import text_string_to_metric_families

from lichen.gateway.metrics import GatewayMetrics
from lichen.runtime.host_readings import ProcessUsage, PsutilHost, gateway_requests


def _parsed(exposition: str) -> dict[tuple[str, str], float]:
    totals: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name == "lichen_gateway_requests":
            for sample in family.samples:
                labels = sample.labels
                if sample.name.endswith("_total") and labels.get("service") and labels.get("revision"):
                    key = (labels["service"], labels["revision"])
                    totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def test_the_request_scan_agrees_with_the_prometheus_parser_on_a_real_gateway_exposition() -> None:
    metrics = GatewayMetrics()
    for revision in ("r1", "r2"):
        for route, status, n in (("/a", "200", 90), ("/b", "500", 10)):
            metrics.counts["requests"][(route, "api", revision, status)] = n
        metrics.observe_request("/a", "api", revision, 200, 0.01)  # other families around it
    metrics.counts["requests"][("/q", 'we"ird\\name', "r1", "200")] = 7  # escapes in a label value
    metrics.counts["requests"][("/none", "api", "", "404")] = 3  # no revision answered: not a revision's
    text = metrics.exposition().decode()
    assert gateway_requests(text) == _parsed(text) == {
        ("api", "r1"): 101.0, ("api", "r2"): 101.0, ('we"ird\\name', "r1"): 7.0}
    decoy = 'other_lichen_gateway_requests_total{service="api",revision="r9"} 5\n'
    assert gateway_requests(decoy + "garbage\n") == {}


@contextlib.contextmanager
def _parent_of(child_code: str) -> Iterator[subprocess.Popen[bytes]]:
    """A process whose one child runs ``child_code``; both killed on the way out."""
    parent = subprocess.Popen([sys.executable, "-c",
                               f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {child_code!r}])\n"
                               "time.sleep(30)"])
    try:
        yield parent
    finally:
        for proc in psutil.Process(parent.pid).children(recursive=True):
            proc.kill()
        parent.kill()
        parent.wait()


def _sample_until(host: PsutilHost, pid: int, shown: Callable[[ProcessUsage], bool], what: str) -> ProcessUsage:
    """Sample ``pid`` until ``shown`` holds (20 s at most)."""
    deadline = time.monotonic() + 20
    while True:
        host.begin_sample()
        usage = host.process(pid)
        assert usage is not None
        if shown(usage):
            return usage
        assert time.monotonic() < deadline, f"{what} never showed: {usage}"
        time.sleep(0.05)


def test_a_process_counts_its_live_childrens_cpu_and_names_their_pids() -> None:
    burn = "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    host = PsutilHost()
    with _parent_of(burn) as parent:
        # /proc counts CPU time in clock ticks, and a busy machine's kernel may show a little less than the
        # child's own clock read: wait for most of the burn, not all of it
        usage = _sample_until(host, parent.pid, lambda u: len(u.pids) == 2 and u.cpu_s >= 0.5, "the child's CPU")
        child = next(pid for pid in usage.pids if pid != parent.pid)
        assert psutil.Process(child).ppid() == parent.pid
        own = sum(psutil.Process(parent.pid).cpu_times()[:2])
        assert usage.cpu_s > own + 0.4  # the child's burn is in the parent's figure
    assert host.process(parent.pid) is None  # gone: None, not an error


def test_memory_counts_the_childrens_resident_pages_and_the_largest_data_segment() -> None:
    hold = "import time\nblob = bytearray(96 * 2**20)\nblob[::4096] = b'x' * len(blob[::4096])\ntime.sleep(30)"
    host = PsutilHost()
    with _parent_of(hold) as parent:
        usage = _sample_until(host, parent.pid, lambda u: len(u.pids) == 2 and u.rss_bytes >= psutil.Process(
            parent.pid).memory_info().rss + 96 * 2**20, "the child's 96 MiB")
        own = psutil.Process(parent.pid).memory_info()
        child = psutil.Process(next(pid for pid in usage.pids if pid != parent.pid)).memory_info()
        assert usage.data_bytes == max(own.data, child.data) >= 96 * 2**20  # the child's, not the sum


def test_system_cpu_times_and_the_cpu_model_read_sensibly() -> None:
    host = PsutilHost()
    busy, total = host.cpu_times()
    assert 0 <= busy <= total
    model = host.cpu_model()
    assert model.logical_cpus >= 1 and model.sockets >= 1
    assert host.memory_total_bytes() > 0
