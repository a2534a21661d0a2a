"""Proving an app before it ships: the open-loop load generator behind ``lichen loadtest`` and its reports.

The load shapes and send schedules are pure (:mod:`lichen.control.load_profiles`);
what lives here opens sockets and measures.
"""
