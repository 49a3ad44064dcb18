"""Fixtures of the reporting tests; the builders live in reporting_fixtures.py."""

from __future__ import annotations

import pandas as pd
import pytest
from reporting_fixtures import make_metrics


@pytest.fixture
def metrics_df() -> pd.DataFrame:
    """A tiny metrics table: 6 methods × 8 patients, fresh for every test."""
    return make_metrics()
