"""The workflow on a real SLURM cluster through snakemake-executor-plugin-slurm.

Needs a running single-node cluster (``scripts/slurm-cluster.sh start``) and
a venv with the plugin (``scripts/slurm/make-venv.sh``); runs only when
``FEATREG_SLURM_TESTS=1``. ``FEATREG_SLURM_SNAKEMAKE`` overrides the path of
that venv's ``snakemake``.
"""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from featreg.evaluation.metrics_table import MEASURED_COLUMNS

REPO = Path(__file__).resolve().parents[2]
SLURM_PROFILE = REPO / "profiles" / "slurm"
LOCAL_PROFILE = REPO / "profiles" / "local"
TEST_CONFIG = REPO / "config" / "test.yaml"
SLURM_SNAKEMAKE = os.environ.get(
    "FEATREG_SLURM_SNAKEMAKE", str(REPO / ".venv-slurm" / "bin" / "snakemake")
)
# A CI node is small: jobs without resources of their own ask for little.
SMALL_DEFAULTS = ["--default-resources", "mem_mb=1000", "runtime=30"]

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        os.environ.get("FEATREG_SLURM_TESTS") != "1",
        reason="needs a SLURM cluster: set FEATREG_SLURM_TESTS=1 after scripts/slurm-cluster.sh start",
    ),
]


def run(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run ``command`` in ``cwd``, capturing stdout and stderr together."""
    bin_dir = Path(sys.executable).parent  # featreg's command, also when the venv isn't activated
    return subprocess.run(
        command,
        check=False,
        cwd=cwd,
        env=dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def workflow_metrics(
    snakemake: list[str], profile: Path, workdir: Path, extra: list[str]
) -> pd.DataFrame:
    """Run the workflow on the test config in ``workdir``; return its metrics table without timings."""
    workdir.mkdir()
    result = run(
        [
            *snakemake,
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(workdir),
            "--workflow-profile",
            str(profile),
            "--configfile",
            str(TEST_CONFIG),
            "--retries",
            "0",
            *extra,
        ],
        cwd=workdir,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-5000:]
    metrics = pd.read_csv(workdir / "reports" / "test" / "metrics.csv")
    return metrics.drop(columns=list(MEASURED_COLUMNS))


def test_workflow_on_slurm_matches_local_run(tmp_path):
    local = workflow_metrics(
        [sys.executable, "-m", "snakemake"], LOCAL_PROFILE, tmp_path / "local", []
    )
    slurm = workflow_metrics(
        [SLURM_SNAKEMAKE], SLURM_PROFILE, tmp_path / "slurm", SMALL_DEFAULTS
    )
    assert len(local) > 0 and (local["status"] == "ok").all()
    pd.testing.assert_frame_equal(slurm, local, check_exact=True)


def test_failing_slurm_job_is_reported_with_its_log(tmp_path):
    (tmp_path / "Snakefile").write_text(
        'rule fail:\n    output: "never.txt"\n    shell: "echo featreg-test-failure >&2; exit 3"\n'
    )
    result = run(
        [
            SLURM_SNAKEMAKE,
            "--workflow-profile",
            str(SLURM_PROFILE),
            "--retries",
            "0",
            *SMALL_DEFAULTS,
        ],
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout[-5000:]
    assert "SLURM-job" in result.stdout and "'FAILED'" in result.stdout, result.stdout[
        -5000:
    ]
    logs = sorted((tmp_path / ".snakemake" / "slurm_logs" / "rule_fail").glob("*.log"))
    assert len(logs) == 1
    assert f"log: {logs[0]}" in result.stdout
    assert "featreg-test-failure" in logs[0].read_text()
    assert not (tmp_path / "never.txt").exists()
