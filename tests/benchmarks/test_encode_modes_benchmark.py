"""benchmarks/encode_modes.py runs end to end on CPU with the default config's small encoders (its full-size
encoders are the same code), and each ratio is the row's time over the NCC baseline's of the same run."""

import csv
import math
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "encode_modes.py"


def test_encode_modes_quick_run_times_every_mode_against_ncc_of_the_same_run(tmp_path: Path):
    out = tmp_path / "encode_modes.csv"
    proc = subprocess.run([sys.executable, str(BENCHMARK), "--quick", "--threads", "1", "--encoders", "mind", "tinyvit",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    got = {(r["encoder"], r["setup"], r["mode"], int(r["batch"])) for r in rows}
    grid = {(s, b) for s in ("paper", "default") for b in (1, 8)}
    assert got == (
        {("none", s, "ncc", b) for s, b in grid}
        | {(e, s, "once", b) for e in ("mind", "tinyvit") for s, b in grid}
        | {("tinyvit", s, "once-pca24", b) for s, b in grid}  # MIND's 12 channels are fewer than 24: no projection
        | {(e, "paper", "each_iteration", 1) for e in ("mind", "tinyvit")}
    )
    assert {r["features"] for r in rows if r["encoder"] == "mind"} == {"12x64x64"}
    assert {r["features"] for r in rows if r["encoder"] == "tinyvit"} == {"96x32x32"}
    ncc = {(r["setup"], r["batch"]): float(r["ms_per_pair_iteration"]) for r in rows if r["mode"] == "ncc"}
    for row in rows:
        ms = float(row["ms_per_pair_iteration"])
        assert ms > 0
        assert math.isclose(float(row["ratio_to_ncc"]), ms / ncc[row["setup"], row["batch"]], rel_tol=2e-3, abs_tol=2e-3)
        assert (row["row_30_minutes"] != "") == (row["setup"] == "paper")  # projected at the paper's settings only
    assert all(float(r["encode_s_per_image"]) > 0 for r in rows if r["encoder"] != "none")
    assert "paper grid, this mode (h)" in proc.stdout
