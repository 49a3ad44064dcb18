"""benchmarks/gpu.py runs end to end on CPU with tiny encoders (the GPU run is the same code at full size)."""

import csv
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


def read(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_gpu_benchmark_tiny_on_cpu(tmp_path: Path):
    proc = subprocess.run([sys.executable, str(BENCHMARK), "--device", "cpu", "--tiny", "--out-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read(tmp_path / "gpu_tiny.csv")
    got = [(r["encoder"], r["dtype"], int(r["batch"]), r["batch_is_auto"]) for r in rows]
    # On CPU, auto is the fixed CPU batch (8) capped by the shard's 2 pairs.
    assert got == [("ncc", "float32", 1, "False"), ("ncc", "float32", 2, "True")] + [
        (e, d, b, str(b == 2)) for e in ("dinov2", "sam") for d in ("float32", "bf16") for b in (1, 2)
    ]
    flop = {r["encoder"]: float(r["gflop_per_pair_iteration"]) for r in rows}
    assert 0 < flop["ncc"] < flop["dinov2"] and flop["ncc"] < flop["sam"]
    assert all(float(r["ms_per_pair_iteration"]) > 0 and r["fraction_of_bf16_peak"] == "" for r in rows)
    # The paper grid's 4830 registrations (its -once rows included; elastix's 420 CPU runs costed as NCC),
    # each counted once.
    assert sum({r["encoder"]: int(r["paper_registrations"]) for r in rows}.values()) == 4830
    accuracy = read(tmp_path / "gpu_tiny_bf16.csv")
    assert [r["encoder"] for r in accuracy] == ["dinov2", "sam"]
    assert all(0 <= float(r["max_field_difference_mm"]) < 1 for r in accuracy)
    assert "projected device-hours of config/paper.yaml" in proc.stdout
