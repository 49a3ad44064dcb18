"""A config mistake stops `snakemake -n` before any job, with one line naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from workflow_helpers import load_config, snakemake, write_config

pytestmark = pytest.mark.slow


def set_key(config: dict, keys: str, value) -> dict:
    """``config`` with ``value`` at the dotted path ``keys``."""
    *parents, last = keys.split(".")
    node = config
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return config


@pytest.mark.parametrize(
    ("keys", "value", "message"),
    [
        ("registration.lamda", 10,
         "registration: unknown registration setting(s): lamda; known: alpha, control_spacing_px,"),
        ("encoders.mind.gird", 32, "encoder 'mind': unknown field(s) gird; known fields: kind, checkpoint,"),
        ("methods.ncc.settings.iteration", 5, "method ncc: unknown registration setting(s): iteration; known:"),
        ("tuning", {"split": [3], "methods": ["ncc"], "grid": {"lattice": [[2, 2]]}},
         "method ncc@lat2x2: lattice needs at least 4 control points per axis for order 3"),
        ("alpha_sweep", {"encoder": "mind", "distance": "cosine", "alphas": [1.5]},
         "alpha_sweep.alphas[0]: 1.5 is greater than the maximum of 1"),
        ("alpha_sweep", {"encoder": "mnd", "distance": "cosine", "alphas": [0.5]},
         "method mnd-cosine-a0.5: unknown encoder 'mnd' (encoders: mind)"),
        ("grid.distnces", ["l1"], "grid: Additional properties are not allowed ('distnces' was unexpected)"),
        ("compute.shard_size", 0, "compute.shard_size: 0 is less than the minimum of 1"),
    ],
)
def test_config_typo_fails_the_dry_run_naming_it(workdir: Path, keys: str, value, message: str):
    config = set_key(load_config("test.yaml"), keys, value)
    write_config(workdir / "config/typo.yaml", config)
    proc = snakemake(workdir, "--configfile", "config/typo.yaml", "-n", check=False)
    assert proc.returncode != 0
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert lines[-1].startswith(f"featreg: config error: {message}"), lines[-5:]
    assert "Traceback" not in proc.stderr and 'File "' not in proc.stderr
