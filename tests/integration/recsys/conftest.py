"""The recommender example's package on sys.path for its integration test."""

from __future__ import annotations

import sys
from pathlib import Path

APP_DIR = Path(__file__).resolve().parents[3] / "examples" / "recsys"
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))
