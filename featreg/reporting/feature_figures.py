"""The feature figures of the report: PCA (Fig. 2), distance against rigid motion (Fig. 3) and
commutativity (Fig. 6) of several encoders on one pair's fixed image."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from featreg.data.nifti import read_nifti
from featreg.data.pairs import middle_pair, pair_patient
from featreg.encoders import analysis
from featreg.encoders.features import build_encoder
from featreg.encoders.registry import EncoderSpec
from featreg.io import atomic_path
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
    analysis.plot_pca(image, feats, out_dir / "pca.png")
    analysis.plot_distance_curves(curves, out_dir / "distance_curves.png")
    with atomic_path(out_dir / "distance_curves.csv") as tmp:
        pd.concat([df.assign(encoder=n) for n, df in curves.items()]).to_csv(tmp, index=False)
    if commute:
        analysis.plot_commutativity(commute, out_dir / "commutativity.png")
