"""featreg's imports run one way: the contracts in pyproject.toml ([tool.importlinter]) hold."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def lint_imports(*args: str) -> subprocess.CompletedProcess:
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    return subprocess.run([command, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept():
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_a_layer_reaching_up_breaks_the_contract(tmp_path):
    """The contract sees imports: a data module importing the job layer is reported."""
    bad = REPO / "featreg" / "data" / "_contract_probe.py"
    bad.write_text("import featreg.jobs.register\n")
    try:
        result = lint_imports("--no-cache")
    finally:
        bad.unlink()
    assert result.returncode == 1, result.stdout
    assert "featreg.data._contract_probe -> featreg.jobs.register" in result.stdout
