"""In-memory twins of Lichen's I/O seams (clock, processes, HTTP probes, state) for users' and Lichen's own tests,
an event loop on virtual time (``VirtualTimeLoop``, ``run_in_virtual_time``, ``until``: a 30 s backoff checked
exactly, in no real time), an open-loop request load (``OpenLoopLoad``) for checking that a rollout loses
nothing, and a local OTLP trace receiver that decodes the real protobuf (``OtlpReceiver``).
"""

from lichen.testing.clocks import FakeClock
from lichen.testing.virtual_time import LoopClock, VirtualTimeLoop, run_in_virtual_time, until

__all__ = ["FakeClock", "FakeLauncher", "FakeProber", "LoopClock", "MemorySecretStore", "OpenLoopLoad", "OtlpReceiver",
           "ServiceClient", "VirtualTimeLoop", "run_in_virtual_time", "until"]


def __getattr__(name: str) -> object:
    # ServiceClient pulls in FastAPI and Starlette's TestClient: import it only when asked for.
    if name == "ServiceClient":
        from lichen.testing.service_clients import ServiceClient

        return ServiceClient
    if name == "OpenLoopLoad":
        from lichen.testing.loads import OpenLoopLoad

        return OpenLoopLoad
    if name == "OtlpReceiver":
        from lichen.testing.otlp import OtlpReceiver

        return OtlpReceiver
    if name == "MemorySecretStore":
        from lichen.testing.secret_stores import MemorySecretStore

        return MemorySecretStore
    if name in ("FakeLauncher", "FakeProber"):
        from lichen.testing import processes

        return getattr(processes, name)
    raise AttributeError(f"module 'lichen.testing' has no attribute {name!r}")
