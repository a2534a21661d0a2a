"""Importing this module fails, the way a bug in user code would."""

raise RuntimeError("model file models/ranker.bin is missing")
