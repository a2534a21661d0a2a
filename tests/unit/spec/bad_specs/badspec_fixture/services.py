"""Entrypoints the bad-spec corpus points at."""


from lichen import Service, endpoint


class Recommender(Service):
    """Stands in for a service class."""

    @endpoint("/recommend")
    def recommend(self) -> dict:
        return {}


class NoEndpoints(Service):
    """A Service that forgot its @endpoint decorators."""

    def recommend(self) -> dict:
        return {}


class NotAService:
    """A plain class."""


def train() -> None:
    """Stands in for a job function."""


NOT_CALLABLE = 42
