"""Energy and carbon accounting per service and per request: where energy and carbon intensity are read from.

So far: RAPL counters through powercap (``rapl``) and carbon-intensity CSV
traces (``intensity_traces``). The sums, the power model with its error band,
attribution and the SCI are pure functions in :mod:`lichen.control.energy_accounting`.
Not wired into ``lichen up`` yet: ``sustainability:`` still warns (docs/sustainability.md).
"""
