"""The recommender reference app: a batch pipeline (ingest → features → train →
evaluate) run as Lichen jobs, and the online services that serve its models.

Pipeline modules: ``interactions`` (the in-memory interaction table and id
maps), ``ingesting`` (reading and validating rating files and the events log),
``synthesizing`` and ``downloading`` (the sources used when no path is given),
``datasets`` (the versioned, checksummed dataset store), ``features`` (the
feature store, SQLite or Redis), ``models`` (EASE, ALS, ItemKNN, popularity),
``splits`` and ``evaluating`` (RecBole's protocol and metrics), ``training``
(tuning, registering, promoting) and ``jobs`` (the job entrypoints).
The app imports only Lichen's public API (``from lichen import ...``).
"""
