"""The workflow's style checks: snakefmt and snakemake --lint report nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from workflow_helpers import REPO, snakemake


def test_snakefmt_is_clean():
    snakefmt = Path(sys.executable).parent / "snakefmt"
    proc = subprocess.run([str(snakefmt), "--check", "Snakefile", "workflow"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakemake_lint_is_clean(workdir: Path):
    for config in ("config.yaml", "test.yaml"):
        proc = snakemake(workdir, "--configfile", f"config/{config}", "--lint", check=False)
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
