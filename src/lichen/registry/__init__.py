"""Versioned artifact stores used by apps and jobs: the model registry (a directory plus a SQLite index) and atomic artifact writes.
"""
