"""The `lichen.yaml` spec: pydantic models, quantity parsing, and loading with file:line:column errors.

Pure data and validation. Imports nothing from other Lichen layers except `lichen.errors`.
"""
