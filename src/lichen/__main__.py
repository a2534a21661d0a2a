"""``python -m lichen``: the ``lichen`` command (what container images run, with no console script)."""

from lichen.cli.main import run

if __name__ == "__main__":
    run()
