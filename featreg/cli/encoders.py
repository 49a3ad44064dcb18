"""``featreg fetch-checkpoints``, ``featreg features`` and ``featreg feature-figures``."""

from __future__ import annotations

import argparse
from pathlib import Path

from featreg.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("fetch-checkpoints", help="download official encoder checkpoints (needs internet)")
    p.add_argument("--dest", type=Path, required=True, help="folder to write the checkpoints to")
    p.add_argument("names", nargs="*", help="checkpoint names (default: all with a direct URL)")
    p.set_defaults(func=_fetch)

    p = subparsers.add_parser("features", help="encode and cache the fixed image of each pair")
    p.add_argument("--encoders", type=Path, nargs="+", required=True, help="YAML/JSON files with encoder entries (or an `encoders:` key)")
    p.add_argument("--encoder", required=True, help="encoder name in those files")
    p.add_argument("--pairs", type=Path, nargs="+", required=True, help="preprocessed pair folders")
    p.add_argument("--out", type=Path, nargs="+", required=True, help="one cache file per pair")
    p.add_argument("--manifest", type=Path, help="JSON written last, listing patient -> feature file")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.set_defaults(func=_features)

    p = subparsers.add_parser("feature-figures", help="PCA, rigid-motion distance curves and commutativity figures")
    p.add_argument("--encoders", type=Path, nargs="+", required=True, help="YAML/JSON files with encoder entries")
    p.add_argument("--names", nargs="+", help="encoders to include (default: all in the file)")
    p.add_argument("--pair", type=Path, required=True, help="a preprocessed pair folder (its fixed image is used)")
    p.add_argument("--displacement", type=Path, help="(X, Y, 1, 1, 2) mm field for the commutativity figure")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.set_defaults(func=_figures)


def _fetch(args: argparse.Namespace) -> int:
    from featreg.encoders.checkpoints import CHECKPOINTS, fetch_checkpoint

    names = args.names or [n for n, e in CHECKPOINTS.items() if e.url is not None]
    for name in names:
        print(fetch_checkpoint(name, args.dest))
    return 0


def _device(name: str) -> str:
    from featreg.registration.optimize import resolve_device

    return str(resolve_device(name))


def _specs(args: argparse.Namespace, names: list[str] | None):
    from featreg.encoders.registry import load_encoder_specs

    specs = {}
    for path in args.encoders:
        specs.update(load_encoder_specs(path))
    missing = [n for n in names or [] if n not in specs]
    if missing:
        files = ", ".join(map(str, args.encoders))
        raise ConfigError(f"encoder(s) {', '.join(missing)} not in {files}; known: {', '.join(specs)}")
    return {n: specs[n] for n in (names or specs)}


def _features(args: argparse.Namespace) -> int:
    from featreg.encoders.cache import cache_fixed_features

    if len(args.pairs) != len(args.out):
        raise ConfigError(f"--pairs has {len(args.pairs)} folders but --out has {len(args.out)} files")
    spec = _specs(args, [args.encoder])[args.encoder]
    written = cache_fixed_features(spec, args.pairs, args.out, _device(args.device))
    if args.manifest is not None:
        from featreg.io import write_json_atomic

        features = {pair.name: str(path) for pair, path in written.items()}
        write_json_atomic(args.manifest, {"encoder": spec.name, "features": features})
    return 0


def _figures(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd
    import torch

    from featreg.data.nifti import read_nifti
    from featreg.io import atomic_path
    from featreg.encoders import analysis
    from featreg.encoders.features import build_encoder

    image, spacing = read_nifti(args.pair / "fixed_image.nii.gz", patient=args.pair.name)
    field = None
    if args.displacement is not None:
        raw, _ = read_nifti(args.displacement)
        field = np.moveaxis(raw.reshape(*image.shape, 2), -1, 0)
    feats, curves, commute = {}, {}, {}
    for name, spec in _specs(args, args.names).items():
        encoder = build_encoder(spec, _device(args.device))
        with torch.no_grad():
            feats[name] = encoder(torch.as_tensor(image, dtype=torch.float32)[None, None]).cpu()
        curves[name] = analysis.distance_curves(encoder, image, spacing)
        if field is not None:
            commute[name] = analysis.commutativity(encoder, image, field, spacing)
    analysis.plot_pca(image, feats, args.out / "pca.png")
    analysis.plot_distance_curves(curves, args.out / "distance_curves.png")
    with atomic_path(args.out / "distance_curves.csv") as tmp:
        pd.concat([df.assign(encoder=n) for n, df in curves.items()]).to_csv(tmp, index=False)
    if commute:
        analysis.plot_commutativity(commute, args.out / "commutativity.png")
    return 0
