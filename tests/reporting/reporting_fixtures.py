"""Tiny hand-made metrics tables and result folders in the layouts of docs/design.md."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from featreg.data.nifti import write_nifti
from featreg.reporting.tuning import read_selections

METHODS = (
    # method, encoder, distance, variant, alpha, Dice shift over initial, sdlogj, neg_jac_pct
    ("initial", "", "", "initial", np.nan, 0.0, 0.0, 0.0),
    ("ncc", "", "", "baseline", 0.0, 0.18, 0.38, 0.0),
    ("dinov2_cos", "dinov2", "cosine", "feature", 1.0, 0.09, 0.24, 0.05),
    ("dinov2_cos_a0.3", "dinov2", "cosine", "combined", 0.3, 0.19, 0.32, 0.0),
    ("dinov2_cos_a0.7", "dinov2", "cosine", "combined", 0.7, 0.185, 0.30, 0.2),
    ("sam_l1", "sam", "l1", "feature", 1.0, 0.1, 0.16, 0.0),
)
SPACING = (1.8, 1.8)


def make_metrics(n_patients: int = 8, seed: int = 0) -> pd.DataFrame:
    """One row per method × patient; Dice = the patient's initial Dice + the method's shift + noise."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.55, 0.7, n_patients)
    rows = []
    for method, encoder, distance, variant, alpha, shift, sdlogj, neg in METHODS:
        noise = rng.normal(0, 0.01, n_patients) if shift else np.zeros(n_patients)
        for i in range(n_patients):
            dice = {c: base[i] + shift + noise[i] + d for c, d in zip(("RV", "Myo", "LV"), (-0.05, -0.02, 0.07))}
            hd = {c: 4.0 - 10 * shift + 0.5 * j + 0.1 * i for j, c in enumerate(("RV", "Myo", "LV"))}
            rows.append({
                "method": method, "encoder": encoder, "distance": distance, "variant": variant, "alpha": alpha,
                "patient": f"patient{121 + i:03d}", "status": "ok", "reason": "",
                **{f"dice_{c}": v for c, v in dice.items()}, "dice_mean": float(np.mean(list(dice.values()))),
                **{f"hd95_{c}": v for c, v in hd.items()}, "hd95_mean": float(np.mean(list(hd.values()))),
                "hd95_empty": "", "sdlogj": sdlogj + 0.01 * i, "neg_jac_pct": neg,
                "sdlogj_heart": sdlogj, "neg_jac_pct_heart": neg,
                "seconds": 2.0, "peak_memory_mb": 100.0, "iterations": 0 if variant == "initial" else 1500,
            })
    return pd.DataFrame(rows)


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return (x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= radius**2


def _labels(shape: tuple[int, int], radius: float) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    label[_disc(shape, (12, 16), radius + 3)] = 2
    label[_disc(shape, (12, 16), radius)] = 3
    label[_disc(shape, (22, 16), 4)] = 1
    return label


def write_pair(pairs: Path, patient: str, shape: tuple[int, int] = (32, 32)) -> Path:
    """A preprocessed pair folder: ED (fixed) with a large LV, ES (moving) with a small one."""
    folder = pairs / patient
    for role, radius in (("fixed", 6.0), ("moving", 4.0)):
        label = _labels(shape, radius)
        write_nifti(folder / f"{role}_label.nii.gz", label, SPACING)
        write_nifti(folder / f"{role}_image.nii.gz", (label / 3.0).astype(np.float32), SPACING)
    return folder


def write_result(results: Path, method: str, patient: str, scale: float, shape: tuple[int, int] = (32, 32), *,
                 seconds: float = 1.0, pair: str | None = None) -> Path:
    """A registration result folder with a smooth radial displacement of amplitude ``scale`` mm.

    ``pair`` (e.g. ``slice03``) writes one slice's pair inside the patient's folder.
    """
    folder = results / method / patient / (pair or "")
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    bump = np.exp(-((x - 12) ** 2 + (y - 16) ** 2) / 30.0)
    u = np.stack([scale * bump * (x - 12) / 6, scale * bump * (y - 16) / 6], axis=-1).astype(np.float32)
    write_nifti(folder / "displacement.nii.gz", u.reshape(*shape, 1, 1, 2), SPACING, intent="vector")
    label = _labels(shape, 5.0)
    write_nifti(folder / "warped_label.nii.gz", label, SPACING)
    write_nifti(folder / "warped_image.nii.gz", (label / 3.0).astype(np.float32), SPACING)
    (folder / "run.json").write_text(json.dumps({"patient": patient, "method": method, "status": "ok",
                                                 "iterations": 1500, "device": "cpu",
                                                 "seconds": seconds}))
    return folder


RULE = {"metric": "dice_mean", "folding": "neg_jac_pct", "max_neg_jac_pct": 0.1, "ties": "..."}
# base, encoder, distance, variant, alpha, {lam: (Dice, sdlogJ, %J<=0)}
GRIDS = {
    "ncc": ("", "", "baseline", 0.0, {30.0: (0.84, 0.50, 0.30), 120.0: (0.83, 0.40, 0.05), 480.0: (0.78, 0.20, 0.0)}),
    "sam-l1-v2": ("sam", "l1", "combined", 0.3,
                  {30.0: (0.86, 0.45, 0.02), 120.0: (0.85, 0.47, 0.01), 480.0: (0.80, 0.25, 0.0)}),
}


def rows(method: str, encoder: str, distance: str, variant: str, alpha: float, dice: float, sdlogj: float,
         neg: float, patients: range, noise: np.ndarray | None = None) -> list[dict]:
    noise = np.zeros(len(patients)) if noise is None else noise
    return [{"method": method, "encoder": encoder, "distance": distance, "variant": variant, "alpha": alpha,
             "patient": f"patient{k:03d}", "status": "ok", "reason": "", "dice_mean": dice + e,
             **{f"dice_{c}": dice + e for c in ("RV", "Myo", "LV")},
             "hd95_mean": 3.0 - dice - e, "sdlogj": sdlogj, "neg_jac_pct": neg, "iterations": 20}
            for k, e in zip(patients, noise)]


def selections_and_tables(tmp_path):
    """Selection records (written to tmp_path), the validation table and the test table of a tuning run.

    Test rows: ncc and sam-l1-v2 at the paper's settings (their configured ones), both
    @tuned (sam-l1-v2@tuned 0.03 above the others in Dice), and the initial pair.
    """
    val, test, paths = [], [], []
    rng = np.random.default_rng(0)
    for base, (encoder, distance, variant, alpha, grid) in GRIDS.items():
        candidates = []
        for lam, (dice, sdlogj, neg) in grid.items():
            name = f"{base}@lam{lam:g}"
            val += rows(name, encoder, distance, variant, alpha, dice, sdlogj, neg, range(101, 106))
            candidates.append({"method": name, "values": {"lam": lam, "lr": 0.002}})
        eligible = {lam: v for lam, v in grid.items() if v[2] <= 0.1}
        lam = max(eligible, key=lambda k: eligible[k][0])
        record = {"base": base, "tuned": f"{base}@tuned", "paper": base, "rule": RULE,
                  "selected": f"{base}@lam{lam:g}", "values": {"lam": lam, "lr": 0.002}, "candidates": candidates,
                  "method": {"name": f"{base}@tuned"}}
        paths.append(tmp_path / f"{base}.json")
        paths[-1].write_text(json.dumps(record))
        shift = 0.03 if base != "ncc" else 0.0
        test += rows(base, encoder, distance, variant, alpha, 0.8, 0.4, 0.0, range(121, 131), rng.normal(0, 0.01, 10))
        test += rows(f"{base}@tuned", encoder, distance, variant, alpha, 0.8 + shift, 0.3, 0.0, range(121, 131),
                     rng.normal(0, 0.005, 10))
    test += rows("initial", "", "", "initial", np.nan, 0.6, 0.0, 0.0, range(121, 131))
    val += rows("initial", "", "", "initial", np.nan, 0.6, 0.0, 0.0, range(101, 106))
    return read_selections(paths), pd.DataFrame(val), pd.DataFrame(test), paths
