"""How hard the synthetic cohort is, in the numbers real ACDC gives, measured through featreg's own pipeline.

    python benchmarks/phantom_realism.py [--patients 121-150] [--seed 0] [--iterations N]
                                         [--settings paper default] [--threads T] [--out CSV]

Synthesizes the patients (``featreg.data.synthetic.synth_patient``, by default
the test split 121-150 as a cohort of >= 150 patients uses it), writes them in
the ACDC layout to a temporary folder, reads and preprocesses them as the
workflow does (middle ED slice, 1.8 mm, 128 x 128), registers all pairs in one
batch with NCC (``register_pairs``) and scores them (``evaluate_arrays``).

Settings: ``paper`` is ``RegistrationSettings.paper()`` (order 1, diffeomorphic,
λ 120, lr 5e-4, 1500 iterations); ``default`` is the ``registration`` block of
config/config.yaml (the laptop run). ``--iterations`` overrides both (for quick
looks; the targets are at the full count).

Printed and written (one row per quantity, ``reports/benchmarks/phantom_realism.csv``):
initial and registered Dice per class (mean ± std over pairs), HD95 per class
(mm; the median over pairs, also in pixels of 1.8 mm), and LV / RV ejection
fraction per group from the 3D label volumes (1 - ESV / EDV, mean ± std over
the group's patients). Real-ACDC figures for NCC at the paper's settings are
printed beside them (issue 15: mean Dice ≈ 0.89, RV 0.92, Myo 0.81, LV 0.94,
HD95 ≈ 4 mm, initial Dice ≈ 0.66).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from featreg.data.acdc import read_patient
from featreg.data.preprocess import preprocess_patient
from featreg.data.synthetic import GROUPS, write_cohort
from featreg.evaluation.metrics import evaluate_arrays
from featreg.io import atomic_path
from featreg.registration import RegistrationSettings, register_pairs
from featreg.registration.io import warp_label_mm

ROOT = Path(__file__).resolve().parents[1]
CSV_PATH = ROOT / "reports" / "benchmarks" / "phantom_realism.csv"
CLASSES = ("RV", "Myo", "LV", "mean")
SPACING_MM = 1.8  # the preprocessed pixel
REAL_ACDC = {"initial dice_mean": 0.66, "ncc paper dice_mean": 0.89, "ncc paper dice_RV": 0.92, "ncc paper dice_Myo": 0.81,
             "ncc paper dice_LV": 0.94, "ncc paper hd95_mean": 4.0}  # fmt: skip
"""NCC FFD at the paper's settings on real ACDC test pairs (issue 15); HD95 in mm."""


def settings_for(name: str, iterations: int | None) -> RegistrationSettings:
    """``paper``: RegistrationSettings.paper(); ``default``: config/config.yaml's registration block."""
    if name == "paper":
        settings = RegistrationSettings.paper()
    else:
        config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
        settings = RegistrationSettings.from_dict(config["registration"])
    return dataclasses.replace(settings, iterations=iterations) if iterations else settings


def ejection_fractions(patients) -> list[dict]:
    """LV and RV ejection fraction per group (mean ± std over the group's patients, from the 3D labels)."""
    rows = []
    for group in GROUPS:
        members = [p for p in patients if p.group == group]
        for name, value in (("LV", 3), ("RV", 1)):
            ef = [1 - (p.es_label == value).sum() / (p.ed_label == value).sum() for p in members]
            rows.append({"quantity": f"{name}EF {group}", "mean": np.mean(ef), "std": np.std(ef), "median": np.median(ef),
                         "n": len(ef), "unit": "fraction"})  # fmt: skip
    return rows


def summarise(label: str, metric_rows: list[dict]) -> list[dict]:
    """Dice per class (mean ± std) and HD95 per class (median, mm and px) over the pairs."""
    out = []
    for name in CLASSES:
        dice = np.array([r[f"dice_{name}"] for r in metric_rows], float)
        out.append({"quantity": f"{label} dice_{name}", "mean": np.nanmean(dice), "std": np.nanstd(dice),
                    "median": np.nanmedian(dice), "n": int(np.isfinite(dice).sum()), "unit": "Dice"})  # fmt: skip
    for name in CLASSES:
        hd = np.array([r[f"hd95_{name}"] for r in metric_rows], float)
        out.append({"quantity": f"{label} hd95_{name}", "mean": np.nanmean(hd), "std": np.nanstd(hd),
                    "median": np.nanmedian(hd), "n": int(np.isfinite(hd).sum()), "unit": "mm"})  # fmt: skip
    return out


def write_montage(path: Path, patients, pairs, seed: int, count: int = 6) -> None:
    """docs/synthetic_montage.png: per patient the ED middle slice at full FOV, then the preprocessed ED and ES
    with label contours (RV blue, Myo green, LV red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(count, len(pairs))
    fig, axes = plt.subplots(3, count, figsize=(2.6 * count, 8.4))
    axes = np.asarray(axes).reshape(3, count)
    for column, (patient, pair) in enumerate(zip(patients[:count], pairs[:count])):
        index = pair.provenance["slice_index"]
        full = patient.ed_image[:, :, index].astype(np.float32)
        axes[0, column].imshow(full.T, cmap="gray", vmax=np.percentile(full, 99.5))
        axes[0, column].set_title(f"{patient.patient} {patient.group}\nED full FOV ({patient.ed_image.dtype})", fontsize=8)
        for row, (image, label, phase) in enumerate(
            ((pair.fixed, pair.fixed_label, "ED (fixed)"), (pair.moving, pair.moving_label, "ES (moving)")), start=1
        ):
            ax = axes[row, column]
            ax.imshow(image.T, cmap="gray")
            for value, colour in ((1, "tab:blue"), (2, "tab:green"), (3, "tab:red")):
                if (label == value).any():
                    ax.contour((label == value).T.astype(float), levels=[0.5], colors=colour, linewidths=0.6)
            ax.set_title(f"{patient.patient} {patient.group}\n{phase} 128x128", fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.suptitle(f"featreg synthetic cohort (seed {seed}): middle slice; contours RV blue, Myo green, LV red", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def parse_range(text: str) -> list[int]:
    """Patient numbers of ``"FIRST-LAST"`` (inclusive) or ``"N"``."""
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", default="121-150", help="patient numbers, FIRST-LAST (default: the test split)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", nargs="*", choices=("paper", "default"), default=["paper", "default"])
    parser.add_argument("--iterations", type=int, default=None, help="override the settings' iterations (quick looks)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=CSV_PATH)
    parser.add_argument("--montage", type=Path, default=None, help="also draw the first six patients here (docs/synthetic_montage.png)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    numbers = parse_range(args.patients)

    with tempfile.TemporaryDirectory() as tmp:
        write_cohort(tmp, len(numbers), seed=args.seed, start=numbers[0], progress=False)
        patients = [read_patient(tmp, f"patient{n:03d}") for n in numbers]
    pairs = [preprocess_patient(p) for p in patients]
    if args.montage:
        write_montage(args.montage, patients, pairs, args.seed)
        print(f"wrote {args.montage}")
    rows = ejection_fractions(patients)
    zero = np.zeros((2, *pairs[0].fixed.shape))
    rows += summarise("initial", [evaluate_arrays(p.fixed_label, p.moving_label, zero, p.spacing) for p in pairs])

    fixed = np.stack([p.fixed for p in pairs])[:, None]
    moving = np.stack([p.moving for p in pairs])[:, None]
    for name in args.settings:
        settings = settings_for(name, args.iterations)
        start = time.perf_counter()
        result = register_pairs(fixed, moving, settings, spacing=(SPACING_MM, SPACING_MM), device="cpu", progress_every_s=None)
        seconds = time.perf_counter() - start
        metric_rows = [
            evaluate_arrays(p.fixed_label, warp_label_mm(p.moving_label, result.displacement_mm[b], p.spacing),
                            result.displacement_mm[b], p.spacing)
            for b, p in enumerate(pairs)
        ]  # fmt: skip
        label = f"ncc {name}"
        rows += [{**row, "iterations": settings.iterations} for row in summarise(label, metric_rows)]
        neg = np.array([r["neg_jac_pct"] for r in metric_rows])
        rows.append({"quantity": f"{label} neg_jac_pct", "mean": neg.mean(), "std": neg.std(), "median": np.median(neg),
                     "n": len(neg), "unit": "%", "iterations": settings.iterations})  # fmt: skip
        print(f"{label}: {settings.iterations} iterations, {seconds:.0f} s for {len(pairs)} pairs")

    print(f"\nseed {args.seed}, patients {numbers[0]}-{numbers[-1]} (n = {len(pairs)} pairs); "
          "Dice mean ± std, HD95 median over pairs (mm and px of 1.8 mm), EF mean ± std per group")  # fmt: skip
    print(f"{'quantity':30} {'mean':>7} {'std':>6} {'median':>7} {'n':>3}  {'real ACDC':>9}")
    for row in rows:
        real = REAL_ACDC.get(row["quantity"])
        extra = f" = {row['median'] / SPACING_MM:.2f} px" if row["unit"] == "mm" else ""
        print(f"{row['quantity']:30} {row['mean']:7.3f} {row['std']:6.3f} {row['median']:7.3f} {row['n']:3d}  "
              f"{'' if real is None else real:>9}{extra}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp_path, open(tmp_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["quantity", "mean", "std", "median", "n", "unit", "iterations", "seed", "patients"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "seed": args.seed, "patients": args.patients})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
