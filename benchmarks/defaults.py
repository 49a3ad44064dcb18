"""The grid search behind config/config.yaml's registration defaults (docs/defaults.md).

    python benchmarks/defaults.py run PAIRS OUT.csv ffd lam=1920,3840 lr=0.001,0.002
    python benchmarks/defaults.py run PAIRS OUT.csv ffd lam=3840 lr=0.001 alpha=1 encoder=mind distance=cosine
    python benchmarks/defaults.py run PAIRS OUT.csv elastix bending_weight=10,30
    python benchmarks/defaults.py summary OUT.csv

``run`` registers every preprocessed pair under PAIRS (``featreg preprocess``'s output) at
each point of the grid, starting from config/config.yaml's ``registration`` block (ffd) or
its elastix method's settings (elastix), and appends one row per pair and point to OUT.csv:
the point, the patient and the metric columns of ``featreg.evaluation.metrics.evaluate_arrays``
(the workflow's). The FFD batch is one ``register_pairs`` call on the CPU, as a registration
job with all pairs in one batch. ``summary`` prints per point the means over pairs of Dice,
%J≤0 and sdlogJ, and the one-sided 95 % upper bound of the mean %J≤0
(mean + 1.645 · sd / √n), the defaults' folding rule.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from featreg.data.pairs import load_pair, pair_labels
from featreg.encoders.features import build_encoder
from featreg.encoders.registry import EncoderSpec
from featreg.evaluation.metrics import evaluate_arrays
from featreg.registration.elastix import ElastixSettings, register_elastix
from featreg.registration.io import warp_label_mm
from featreg.registration.optimize import register_pairs
from featreg.registration.settings import RegistrationSettings

REPO = Path(__file__).resolve().parents[1]
Z_95 = 1.645  # one-sided 95 % normal quantile


def parse_value(text: str) -> bool | int | float | str:
    """A grid value as YAML reads it (``true``, ``300``, ``0.001``, ``cosine``)."""
    return yaml.safe_load(text)


def grid_points(specs: list[str]) -> list[dict]:
    """Every combination of ``key=v1,v2`` specs, in the order given."""
    grid = {key: [parse_value(v) for v in values.split(",")] for key, values in (s.split("=", 1) for s in specs)}
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def register(kind: str, point: dict, pairs: list, config: dict) -> list[np.ndarray]:
    """The displacement fields (mm) of ``pairs`` at grid ``point`` over the config's settings."""
    if kind == "elastix":
        settings = ElastixSettings.from_dict({**config["methods"]["elastix"]["settings"], **point})
        return [register_elastix(p.fixed, p.moving, p.spacing, settings).displacement_mm for p in pairs]
    point = dict(point)
    encoder = None
    if "encoder" in point:
        name = point.pop("encoder")
        encoder = build_encoder(EncoderSpec.from_dict(name, config["encoders"][name]))
        point["feature_distance"] = point.pop("distance")
    settings = RegistrationSettings.from_dict({**config["registration"], **point})
    result = register_pairs(np.stack([p.fixed for p in pairs])[:, None], np.stack([p.moving for p in pairs])[:, None],
                            settings, spacing=pairs[0].spacing, encoder=encoder, device="cpu", progress_every_s=None)
    return list(result.displacement_mm)


def run(pairs_root: Path, out_csv: Path, kind: str, specs: list[str]) -> None:
    dirs = sorted(d for d in pairs_root.iterdir() if (d / "pair.json").is_file())
    pairs = [load_pair(d) for d in dirs]
    labels = pair_labels(dirs[0])
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for point in grid_points(specs):
        name = "_".join(f"{k}{v}" for k, v in point.items())
        fields = register(kind, point, pairs, config)
        rows = [{"kind": kind, "point": name, "patient": pair.patient,
                 **evaluate_arrays(pair.fixed_label, warp_label_mm(pair.moving_label, field, pair.spacing), field,
                                   pair.spacing, labels)}
                for pair, field in zip(pairs, fields)]
        pd.DataFrame(rows).to_csv(out_csv, mode="a", header=not out_csv.exists(), index=False)
        print(f"{kind} {name}: " + summary_line(pd.DataFrame(rows)), flush=True)


def summary_line(rows: pd.DataFrame) -> str:
    folding = rows["neg_jac_pct"]
    bound = folding.mean() + Z_95 * folding.std(ddof=1) / np.sqrt(len(folding))
    return (f"Dice {rows['dice_mean'].mean():.4f}, %J<=0 {folding.mean():.4f} (upper bound {bound:.4f}), "
            f"sdlogJ {rows['sdlogj'].mean():.3f}, n {len(rows)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run")
    run_parser.add_argument("pairs", type=Path)
    run_parser.add_argument("out", type=Path)
    run_parser.add_argument("kind", choices=["ffd", "elastix"])
    run_parser.add_argument("grid", nargs="+", help="key=v1,v2 (a RegistrationSettings or ElastixSettings field)")
    summary_parser = sub.add_parser("summary")
    summary_parser.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.command == "run":
        run(args.pairs, args.out, args.kind, args.grid)
    else:
        table = pd.read_csv(args.out)
        for (kind, point), rows in table.groupby(["kind", "point"], sort=False):
            print(f"{kind} {point}: {summary_line(rows)}")


if __name__ == "__main__":
    main()
