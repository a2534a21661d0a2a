"""Energy and carbon: where energy and carbon intensity are read from, each figure labelled with its source.

``rapl`` (powercap counters), ``nvml`` (GPU energy counters and per-process
utilisation), ``reference_tables`` (codecarbon's CPU TDP and grid-intensity
data, read as files), ``intensity_apis`` (Electricity Maps, WattTime, the
Carbon Aware SDK), ``intensity_traces`` (CSV traces) and ``intensity_sources``
(the chain that picks one, and the spec checks). The sums, the power model
with its band, attribution and the SCI are pure functions in
:mod:`lichen.control.energy_accounting`; the meter that runs them under
``lichen up`` is :mod:`lichen.runtime.metering` (docs/sustainability.md).
"""
