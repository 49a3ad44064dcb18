"""The feature figures of the report: PCA (Fig. 2), distance against rigid motion (Fig. 3) and
commutativity (Fig. 6) of several encoders on one pair's fixed image."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from featreg.data.nifti import read_nifti
from featreg.data.pairs import middle_pair, pair_patient
from featreg.encoders.features import build_encoder
from featreg.encoders.registry import EncoderSpec
from featreg.io import atomic_path
from featreg.reporting import feature_analysis as analysis
from featreg.reporting.figures import save_figure
from featreg.devices import resolve_device


def write_feature_figures(
    specs: Mapping[str, EncoderSpec],
    pair_dir: str | Path,
    out_dir: str | Path,
    *,
    displacement: str | Path | None = None,
    device: str = "auto",
) -> None:
    """pca.png, distance_curves.png (+ .csv) and, given a displacement (an (X, Y, 1, 1, 2) mm field),
    commutativity.png in ``out_dir``, one panel or curve per encoder of ``specs``.

    ``pair_dir`` is a patient's folder; with one pair per slice its middle slice is shown, and
    ``displacement`` (the patient's result file) is taken from that slice's result folder."""
    out_dir = Path(out_dir)
    pair = middle_pair(pair_dir)  # the patient's own pair, or its middle slice's
    device = str(resolve_device(device))
    image, spacing = read_nifti(pair / "fixed_image.nii.gz", patient=pair_patient(pair))
    field = None
    if displacement is not None:
        displacement = Path(displacement)
        if pair != Path(pair_dir):  # one pair per slice: the displacement of the slice shown
            displacement = displacement.parent / pair.name / displacement.name
        raw, _ = read_nifti(displacement)
        field = np.moveaxis(raw.reshape(*image.shape, 2), -1, 0)
    feats, curves, commute = {}, {}, {}
    for name, spec in specs.items():
        encoder = build_encoder(spec, device)
        with torch.no_grad():
            feats[name] = encoder(torch.as_tensor(image, dtype=torch.float32)[None, None]).cpu()
        curves[name] = analysis.distance_curves(encoder, image, spacing)
        if field is not None:
            commute[name] = analysis.commutativity(encoder, image, field, spacing)
    plot_pca(image, feats, out_dir / "pca.png")
    plot_distance_curves(curves, out_dir / "distance_curves.png")
    with atomic_path(out_dir / "distance_curves.csv") as tmp:
        pd.concat([df.assign(encoder=n) for n, df in curves.items()]).to_csv(tmp, index=False)
    if commute:
        plot_commutativity(commute, out_dir / "commutativity.png")


def plot_pca(image: np.ndarray, features: Mapping[str, torch.Tensor], out: str | Path, n_components: int = 5) -> Path:
    """Fig. 2: per encoder (row), the image, the first 3 components as RGB, then each of ``n_components``."""
    rows = len(features)
    fig, axes = plt.subplots(rows, 2 + n_components, figsize=(2 * (2 + n_components), 2 * rows), squeeze=False)
    for row, (name, f) in enumerate(features.items()):
        scores = analysis.to_unit(analysis.pca_project(f, analysis.pca_basis(f, max(3, n_components))))
        axes[row, 0].imshow(np.asarray(image).T, cmap="gray", origin="lower")
        axes[row, 0].set_ylabel(name)
        axes[row, 1].imshow(np.moveaxis(scores[:3], 0, -1).transpose(1, 0, 2), origin="lower")
        axes[row, 1].set_title("PC 1–3 (RGB)" if row == 0 else "")
        for c in range(n_components):
            axes[row, 2 + c].imshow(scores[c].T, cmap="viridis", origin="lower")
            axes[row, 2 + c].set_title(f"PC {c + 1}" if row == 0 else "")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return save_figure(fig, out)


def plot_distance_curves(curves: Mapping[str, pd.DataFrame], out: str | Path) -> Path:
    """Fig. 3: rows rotation / translation, columns cosine / L1, one line per encoder."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), squeeze=False)
    for r, (motion, unit) in enumerate((("rotation", "degrees"), ("translation", "mm"))):
        for c, measure in enumerate(("cosine", "l1")):
            ax = axes[r, c]
            for name, df in curves.items():
                part = df[df["motion"] == motion]
                ax.plot(part["amount"], part[measure], marker=".", label=name)
            ax.set_xlabel(f"{motion} ({unit})")
            ax.set_ylabel("cosine dissimilarity" if measure == "cosine" else "L1 distance")
            ax.grid(alpha=0.3)
    axes[0, 0].legend()
    fig.tight_layout()
    return save_figure(fig, out)


def plot_commutativity(results: Mapping[str, Mapping[str, torch.Tensor]], out: str | Path) -> Path:
    """Fig. 6, one row per encoder: image, encoded, warped features, encoded warped image, difference.
    Feature maps share the PCA basis and colour range of the encoded image."""
    fig, axes = plt.subplots(len(results), 5, figsize=(15, 3 * len(results)), squeeze=False)
    titles = ("image", "encoded image", "warped features", "encoded warped image", "difference (1 − cos)")
    for row, (name, r) in enumerate(results.items()):
        basis = analysis.pca_basis(r["encoded"], 3)
        ref = analysis.pca_project(r["encoded"], basis)
        lo, hi = ref.min(axis=(1, 2), keepdims=True), ref.max(axis=(1, 2), keepdims=True)
        panels = [r["image"].numpy().T]
        for key in ("encoded", "warped_features", "encoded_warped"):
            panels.append(analysis.to_unit(analysis.pca_project(r[key], basis), lo, hi).transpose(2, 1, 0))
        for col, panel in enumerate(panels):
            axes[row, col].imshow(panel, cmap="gray" if col == 0 else None, origin="lower")
        im = axes[row, 4].imshow(r["difference"].numpy().T, cmap="magma", origin="lower")
        fig.colorbar(im, ax=axes[row, 4], fraction=0.046)
        axes[row, 0].set_ylabel(name)
        for col, title in enumerate(titles):
            axes[row, col].set_title(title if row == 0 else "")
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
    fig.tight_layout()
    return save_figure(fig, out)
