"""NVIDIA GPU readings (lichen.green.nvml) through a twin of the ``pynvml`` module: energy counters, power,
per-process SM utilisation with NVML's last-seen timestamp, the reasons NVML is unavailable, and joules per GPU."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from lichen.green.nvml import GpuReading, NvmlReader, NvmlUnavailable, gpu_energy_j


class NVMLError(Exception):
    """pynvml's base error (each NVML status is a subclass of it there)."""


@dataclass
class Sample:
    pid: int
    smUtil: int
    timeStamp: int


@dataclass
class FakeNvml:  # pynvml's camelCase names
    """What NvmlReader calls of ``pynvml``; each device is a handle string ``gpu<i>``."""

    uuids: list[Any]
    energy_mj: dict[int, int | None] = field(default_factory=dict)  # None: NVML_ERROR_NOT_SUPPORTED
    power_mw: dict[int, int | None] = field(default_factory=dict)
    samples: dict[int, list[Sample]] = field(default_factory=dict)
    init_error: str | None = None
    shutdowns: int = 0
    last_seen_asked: list[tuple[str, int]] = field(default_factory=list)

    NVMLError = NVMLError

    def nvmlInit(self) -> None:
        if self.init_error:
            raise NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.uuids)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"gpu{index}"

    @staticmethod
    def _index(handle: str) -> int:
        return int(handle.removeprefix("gpu"))

    def nvmlDeviceGetUUID(self, handle: str) -> Any:
        return self.uuids[self._index(handle)]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:
        value = self.energy_mj.get(self._index(handle))
        if value is None:
            raise NVMLError("Not Supported")
        return value

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:
        value = self.power_mw.get(self._index(handle))
        if value is None:
            raise NVMLError("Not Supported")
        return value

    def nvmlDeviceGetProcessUtilization(self, handle: str, last_seen: int) -> list[Sample]:
        self.last_seen_asked.append((handle, last_seen))
        samples = [s for s in self.samples.get(self._index(handle), []) if s.timeStamp > last_seen]
        if not samples:
            raise NVMLError("Not Found")  # what NVML answers when no process ran since last_seen
        return samples


def test_each_device_is_read_with_its_counter_power_and_utilisation_by_pid() -> None:
    nvml = FakeNvml(uuids=[b"GPU-aaaa", "GPU-bbbb"], energy_mj={0: 5_000_000, 1: 7_000}, power_mw={0: 250_000},
                    samples={0: [Sample(101, 40, 1_000), Sample(101, 70, 2_000), Sample(202, 10, 1_500)]})
    reader = NvmlReader(nvml)
    first, second = reader.read()
    assert (first.index, first.uuid, first.energy_mj, first.power_mw) == (0, "GPU-aaaa", 5_000_000, 250_000)
    assert first.utilisation_by_pid == {101: 70.0, 202: 10.0}  # the highest sample of each pid
    assert (second.index, second.uuid, second.energy_mj, second.power_mw) == (1, "GPU-bbbb", 7_000, None)
    assert second.utilisation_by_pid == {}
    reader.close()
    assert nvml.shutdowns == 1


def test_the_last_seen_timestamp_advances_and_is_passed_on_the_next_read() -> None:
    nvml = FakeNvml(uuids=["GPU-a"], energy_mj={0: 1}, samples={0: [Sample(7, 20, 1_000), Sample(8, 30, 3_000)]})
    reader = NvmlReader(nvml)
    assert reader.read()[0].utilisation_by_pid == {7: 20.0, 8: 30.0}
    assert nvml.last_seen_asked == [("gpu0", 0)]
    assert reader.last_seen_us == [3_000]
    nvml.samples[0].append(Sample(7, 90, 4_500))
    assert reader.read()[0].utilisation_by_pid == {7: 90.0}  # only what NVML sampled since 3000 us
    assert nvml.last_seen_asked[-1] == ("gpu0", 3_000)
    assert reader.read()[0].utilisation_by_pid == {}  # nothing new: NVML's "not found" is no utilisation
    assert nvml.last_seen_asked[-1] == ("gpu0", 4_500) and reader.last_seen_us == [4_500]


def test_a_device_without_an_energy_counter_reads_none_for_it() -> None:
    nvml = FakeNvml(uuids=["GPU-old", "GPU-new"], energy_mj={1: 42}, power_mw={0: 80_000, 1: 90_000})
    old, new = NvmlReader(nvml).read()
    assert old.energy_mj is None and old.power_mw == 80_000
    assert new.energy_mj == 42 and new.power_mw == 90_000


def test_a_device_whose_uuid_cannot_be_read_is_named_by_its_index() -> None:
    nvml = FakeNvml(uuids=["GPU-a", "GPU-b"], energy_mj={0: 1, 1: 2})

    def no_uuid(handle: str) -> str:
        raise NVMLError("Unknown Error")

    nvml.nvmlDeviceGetUUID = no_uuid  # type: ignore[method-assign]
    readings = NvmlReader(nvml).read()
    assert [r.uuid for r in readings] == ["0", "1"]


def test_nvml_failing_to_start_is_unavailable_with_its_reason() -> None:
    with pytest.raises(NvmlUnavailable, match="Driver Not Loaded"):
        NvmlReader(FakeNvml(uuids=["GPU-a"], init_error="Driver Not Loaded"))


def test_no_gpu_is_unavailable_and_nvml_is_shut_down() -> None:
    nvml = FakeNvml(uuids=[])
    with pytest.raises(NvmlUnavailable, match="no GPU"):
        NvmlReader(nvml)
    assert nvml.shutdowns == 1


def test_closing_tolerates_an_nvml_error() -> None:
    nvml = FakeNvml(uuids=["GPU-a"])

    def shutdown() -> None:
        raise NVMLError("Uninitialized")

    nvml.nvmlShutdown = shutdown  # type: ignore[method-assign]
    NvmlReader(nvml).close()  # no exception


# --------------------------------------------------------------- joules


def _reading(energy_mj: int | None, power_mw: int | None) -> GpuReading:
    return GpuReading(0, "GPU-a", energy_mj, power_mw)


def test_the_counter_difference_is_the_energy_in_joules_with_no_band() -> None:
    assert gpu_energy_j(_reading(1_000_000, 300_000), _reading(1_250_500, 300_000), 5.0) == \
        (pytest.approx(250.5), pytest.approx(250.5), pytest.approx(250.5), "nvml")
    assert gpu_energy_j(_reading(9, None), _reading(9, None), 5.0) == (0.0, 0.0, 0.0, "nvml")


def test_without_a_counter_the_mean_power_times_the_interval_between_the_two_reads() -> None:
    joules, low, high, source = gpu_energy_j(_reading(None, 100_000), _reading(None, 200_000), 10.0)
    assert source == "nvml-power" and joules == pytest.approx(1_500.0)  # 150 W for 10 s
    assert (low, high) == (pytest.approx(1_000.0), pytest.approx(2_000.0))  # 100 W and 200 W for 10 s
    joules, low, high, source = gpu_energy_j(_reading(1_000, 100_000), _reading(None, 300_000), 2.0)
    assert source == "nvml-power" and joules == pytest.approx(400.0) and low < joules < high
    joules, low, high, source = gpu_energy_j(_reading(None, None), _reading(None, 60_000), 3.0)
    assert source == "nvml-power" and joules == low == high == pytest.approx(180.0)  # one power read: that one
    assert gpu_energy_j(_reading(None, None), _reading(None, None), 3.0) == (0.0, 0.0, 0.0, "nvml-power")
    assert gpu_energy_j(_reading(None, 100_000), _reading(None, 100_000), -1.0)[:3] == (0.0, 0.0, 0.0)


def test_a_counter_going_backwards_after_a_driver_reload_uses_the_power_path() -> None:
    joules, _, _, source = gpu_energy_j(_reading(9_000_000, 200_000), _reading(5_000, 100_000), 4.0)
    assert source == "nvml-power" and joules == pytest.approx(600.0)  # mean 150 W for 4 s, not a negative figure