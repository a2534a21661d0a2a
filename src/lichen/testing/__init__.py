"""In-memory twins of Lichen's I/O seams (clock, processes, HTTP probes, state) for users' and Lichen's own tests.
"""

from lichen.testing.clocks import FakeClock

__all__ = ["FakeClock"]
