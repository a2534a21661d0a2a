"""Entrypoints the bad-spec corpus points at."""


class Recommender:
    """Stands in for a service class."""


def train() -> None:
    """Stands in for a job function."""


NOT_CALLABLE = 42
