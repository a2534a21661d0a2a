"""A tiny importable app used by the bad-spec corpus (entrypoint checks)."""
