"""In-memory twins of Lichen's I/O seams (clock, processes, HTTP probes, state) for users' and Lichen's own tests.
"""
