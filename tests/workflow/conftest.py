"""Fixtures of the workflow tests (helpers: workflow_helpers.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from workflow_helpers import REPO


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A scratch working directory holding a copy of config/."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    return tmp_path
