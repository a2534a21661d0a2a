"""Each replica's CPU and memory use on the controller's ``/metrics``, as cAdvisor exports a container's.

The energy meter reads every replica's process (with its children) each sample; it hands the readings to
:class:`ReplicaUsageCollector`, which the embedded Prometheus scrapes (``job="controller"``):

* ``lichen_replica_cpu_seconds_total{service,revision,replica}``: CPU seconds of the process and its
  children (cAdvisor's ``container_cpu_usage_seconds_total``; a restart resets it, as a counter may);
* ``lichen_replica_memory_working_set_bytes``: resident memory (what a cgroup's ``memory.max`` limits;
  cAdvisor's ``container_memory_working_set_bytes``);
* ``lichen_replica_memory_data_bytes``: the data segment and private mappings (what ``RLIMIT_DATA``
  limits, Lichen's enforcement where cgroups are not writable).

``lichen advise`` reads them to size ``resources``. A replica that is gone drops out at the next sample.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

LABELS = ["service", "revision", "replica"]


@dataclass(frozen=True)
class UsageReading:
    cpu_s: float
    working_set_bytes: int
    data_bytes: int


class ReplicaUsageCollector(Collector):
    def __init__(self) -> None:
        self.readings: dict[tuple[str, str, str], UsageReading] = {}

    def update(self, readings: dict[tuple[str, str, str], UsageReading]) -> None:
        """The readings of one sample (service, revision, replica -> reading); replicas not in it are gone."""
        self.readings = dict(readings)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        readings = self.readings  # one sample's dict: the meter swaps it whole
        cpu = CounterMetricFamily("lichen_replica_cpu_seconds", "CPU seconds of a replica's process and its "
                                  "children.", labels=LABELS)
        working = GaugeMetricFamily("lichen_replica_memory_working_set_bytes", "Resident memory of a replica's "
                                    "process.", labels=LABELS)
        data = GaugeMetricFamily("lichen_replica_memory_data_bytes", "Data segment and private mappings of a "
                                 "replica's process (what RLIMIT_DATA limits).", labels=LABELS)
        for labels, reading in sorted(readings.items()):
            cpu.add_metric(list(labels), reading.cpu_s)
            working.add_metric(list(labels), reading.working_set_bytes)
            data.add_metric(list(labels), reading.data_bytes)
        yield cpu
        yield working
        yield data
