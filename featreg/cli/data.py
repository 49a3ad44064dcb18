"""``featreg synth`` and ``featreg preprocess``: argument parsing only."""

from __future__ import annotations

import argparse
from pathlib import Path

from featreg.data.preprocess import PreprocessOptions
from featreg.errors import ConfigError


def _synth(args: argparse.Namespace) -> int:
    from featreg.data.synthetic import write_cohort
    from featreg.jobs.data import synthesize_shard

    if args.ids:
        if args.manifest is None:
            raise ConfigError("--ids writes a shard of patients: give --manifest too")
        synthesize_shard(args.out, args.ids, args.manifest, seed=args.seed)
        return 0
    write_cohort(args.out, args.patients, seed=args.seed, start=args.start, with_4d=args.with_4d)
    return 0


def _preprocess(args: argparse.Namespace) -> int:
    from featreg.jobs.evaluate import evaluate_shard
    from featreg.data.pair_manifest import shard_pair_dirs
    from featreg.jobs.data import preprocess_cohort, preprocess_shard

    options = PreprocessOptions(
        spacing_mm=args.spacing,
        size=args.size,
        crop_reference=args.crop_reference,
        clip_percentiles=tuple(args.clip_percentiles) if args.clip_percentiles else None,
        slices=_slices(args.slices),
        **({"labels": _labels(args.labels)} if args.labels else {}),
    )
    if args.manifest is not None:
        if not args.patients:
            raise ConfigError("--manifest preprocesses a shard of patients: give --patients too")
        manifest = preprocess_shard(args.root, args.patients, args.out, args.manifest, options)
        if args.metrics is not None:
            evaluate_shard(shard_pair_dirs(manifest), args.metrics)
        return 0
    if args.metrics is not None:
        raise ConfigError("--metrics evaluates a shard: give --manifest and --patients too")
    preprocess_cohort(args.root, args.out, args.patients or args.split, options)
    return 0


def _slices(words: list[str]) -> str | tuple[int, ...]:
    """``--slices``: ``middle``, ``all`` or integer offsets from the middle slice."""
    if len(words) == 1 and words[0] in ("middle", "all"):
        return words[0]
    try:
        return tuple(int(word) for word in words)
    except ValueError:
        raise ConfigError(f"--slices takes 'middle', 'all' or integer offsets from the middle, got {' '.join(words)}") from None


def _labels(words: list[str]) -> dict[str, int]:
    """``--labels RV=1 Myo=2 LV=3``: label class names and their values."""
    labels = {}
    for word in words:
        name, sep, value = word.partition("=")
        if not sep or not name or not value.isdigit():
            raise ConfigError(f"--labels takes NAME=VALUE pairs (e.g. RV=1 Myo=2 LV=3), got {word!r}")
        labels[name] = int(value)
    return labels


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    synth = subparsers.add_parser(
        "synth",
        help="write a synthetic cardiac MRI cohort in the ACDC layout",
        description="Write patients START..START+N-1 of the synthetic cohort SEED; patient k depends only on (SEED, k).",
    )
    synth.add_argument("--out", type=Path, required=True, help="cohort root (gets database/training, database/testing)")
    which = synth.add_mutually_exclusive_group(required=True)
    which.add_argument("--patients", type=_positive_int, help="number of patients N (from --start)")
    which.add_argument(
        "--ids", nargs="+", metavar="PATIENT", help="a shard: these patient ids, skipping those already written"
    )
    synth.add_argument("--seed", type=int, default=0, help="cohort seed (default 0)")
    synth.add_argument("--start", type=_positive_int, default=1, help="number of the first patient (default 1)")
    synth.add_argument("--manifest", type=Path, help="with --ids: JSON written last, with each patient's status")
    synth.add_argument(
        "--4d",
        dest="with_4d",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also write patientNNN_4d.nii.gz (ED/ES blend; slow, unused by featreg; default --no-4d)",
    )
    synth.set_defaults(func=_synth)

    pre = subparsers.add_parser(
        "preprocess",
        help="extract fixed (ED) / moving (ES) 2D pairs from an ACDC-layout folder",
        description="Resample in-plane, crop around the ED heart, take the middle slice, scale to [0, 1].",
    )
    pre.add_argument("--root", type=Path, required=True, help="ACDC root (with or without database/)")
    pre.add_argument("--out", type=Path, required=True, help="pairs folder; writes OUT/<patient>/")
    pre.add_argument("--split", choices=("test", "val", "train", "all"), default="test", help="default: test (121-150)")
    pre.add_argument("--patients", nargs="+", metavar="PATIENT", help="explicit patient ids (override --split)")
    defaults = PreprocessOptions()
    pre.add_argument("--spacing", type=float, default=defaults.spacing_mm, help="in-plane spacing in mm (default %(default)s)")
    pre.add_argument("--size", type=int, default=defaults.size, help="output size in pixels (default %(default)s)")
    pre.add_argument(
        "--crop-reference", choices=("heart", "slice"), default=defaults.crop_reference, help="ED bounding box to centre on"
    )
    pre.add_argument(
        "--slices",
        nargs="+",
        default=[defaults.slices],
        metavar="SLICES",
        help="middle (default, the paper's), all (every slice of the ED heart with labels in both frames) "
        "or offsets from the middle, e.g. -1 0 1",
    )
    pre.add_argument(
        "--labels",
        nargs="+",
        metavar="NAME=VALUE",
        help="label classes of the label maps (default: ACDC's "
        + " ".join(f"{name}={value}" for name, value in defaults.labels.items())
        + "); other values are refused and the metrics follow these classes",
    )
    pre.add_argument(
        "--clip-percentiles", type=float, nargs=2, metavar=("LOW", "HIGH"), help="clip before min-max (default none)"
    )
    pre.add_argument(
        "--manifest",
        type=Path,
        help="shard mode (with --patients): skip pairs already made with these options, "
        "let a bad patient fail alone, write each patient's status here",
    )
    pre.add_argument(
        "--metrics",
        type=Path,
        help="shard mode: then write the shard's metrics before registration (`featreg evaluate`'s table) here",
    )
    pre.set_defaults(func=_preprocess)
