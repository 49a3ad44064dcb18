"""Shard jobs: stable shard formation, resuming, failure isolation, and sharded = one job per pair."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from featreg.cli import main
from featreg.data.nifti import read_displacement
from featreg.data.pairs import PAIR_FAILURE
from featreg.data.preprocess import PreprocessOptions
from featreg.encoders.feature_manifest import write_feature_manifest
from featreg.encoders.features import build_encoder
from featreg.encoders.registry import EncoderSpec
from featreg.errors import ConfigError
from featreg.experiment.methods import Method
from featreg.experiment.splits import shard_patients
from featreg.jobs.data import preprocess_shard, synthesize_shard
from featreg.jobs.evaluate import evaluate_shard
from featreg.jobs.features import features_shard, method_encoder_spec
from featreg.jobs.register import register_shard
from featreg.registration import register_pairs

PATIENTS = ["patient001", "patient002", "patient003"]
METHOD = Method("ncc", settings={"lattice": [8, 8], "iterations": 6, "lr": 0.01})


def ids(numbers) -> list[str]:
    return [f"patient{k:03d}" for k in numbers]


def test_shards_are_stable_when_patients_are_added():
    before = shard_patients(ids(range(1, 11)), 4)
    after = shard_patients(list(reversed(ids(range(1, 14)))), 4)  # input order does not matter
    assert before == {"s000": ids(range(1, 5)), "s001": ids(range(5, 9)), "s002": ids([9, 10])}
    assert {s: after[s] for s in ("s000", "s001")} == {s: before[s] for s in ("s000", "s001")}
    assert after["s002"][:2] == before["s002"] and set(after) == {"s000", "s001", "s002", "s003"}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Three synthetic patients (ACDC layout) and their pairs; patient002's ED label is then removed."""
    root = tmp_path_factory.mktemp("cohort")
    synthesize_shard(root / "acdc", PATIENTS, root / "synthetic.json", seed=0)
    preprocess_shard(root / "acdc", PATIENTS, root / "pairs", root / "pairs.json", PreprocessOptions())
    return root


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_data_shards_skip_patients_already_done(cohort: Path, tmp_path: Path):
    acdc, pairs = cohort / "acdc", cohort / "pairs"
    written, made = mtimes(acdc), mtimes(pairs)
    synthesize_shard(acdc, PATIENTS, tmp_path / "synthetic.json", seed=0)
    preprocess_shard(acdc, PATIENTS, pairs, tmp_path / "pairs.json", PreprocessOptions())
    assert mtimes(acdc) == written and mtimes(pairs) == made
    for name in ("synthetic.json", "pairs.json"):
        statuses = json.loads((tmp_path / name).read_text())["patients"]
        assert statuses == {p: {"status": "ok", "reason": "", "resumed": True} for p in PATIENTS}
    # Other preprocessing options redo the pair; another seed rewrites the patient.
    preprocess_shard(acdc, PATIENTS[:1], tmp_path / "pairs", tmp_path / "other.json", PreprocessOptions(size=64))
    moved = cohort / "copy"
    shutil.copytree(acdc, moved)
    synthesize_shard(moved, PATIENTS[:1], tmp_path / "seed1.json", seed=1)
    assert json.loads((tmp_path / "seed1.json").read_text())["patients"] == {"patient001": {"status": "ok", "reason": ""}}
    assert mtimes(moved)["database/training/patient001/Info.cfg"] != written["database/training/patient001/Info.cfg"]


def test_a_bad_patient_fails_alone(cohort: Path, tmp_path: Path):
    acdc = tmp_path / "acdc"
    shutil.copytree(cohort / "acdc", acdc)
    next((acdc / "database/training/patient002").glob("*_frame01_gt.nii.gz")).unlink()
    pairs = tmp_path / "pairs"
    preprocess_shard(acdc, PATIENTS, pairs, tmp_path / "pairs.json", PreprocessOptions())
    statuses = json.loads((tmp_path / "pairs.json").read_text())["patients"]
    assert [statuses[p]["status"] for p in PATIENTS] == ["ok", "failed", "ok"]
    assert "frame01_gt" in statuses["patient002"]["reason"]
    assert [p.name for p in (pairs / "patient002").iterdir()] == [PAIR_FAILURE]

    pair_dirs = [pairs / p for p in PATIENTS]
    register_shard(METHOD, pair_dirs, tmp_path / "ncc", tmp_path / "ncc.json", device="cpu", batch_size=3)
    statuses = json.loads((tmp_path / "ncc.json").read_text())["patients"]
    assert [statuses[p]["status"] for p in PATIENTS] == ["ok", "failed", "ok"]
    assert statuses["patient002"]["reason"].startswith("preprocessing failed:")
    assert (tmp_path / "ncc/patient003/displacement.nii.gz").is_file()

    for method, results in ((None, None), (METHOD, tmp_path / "ncc")):
        evaluate_shard(pair_dirs, tmp_path / "metrics.csv", method=method, results_dir=results)
        table = pd.read_csv(tmp_path / "metrics.csv").set_index("patient")
        assert list(table["status"]) == ["ok", "failed", "ok"]
        assert table.loc["patient002", "reason"].startswith("preprocessing failed:")
        assert np.isnan(table.loc["patient002", "dice_mean"]) and table["dice_mean"].notna().sum() == 2


def test_sharded_run_equals_one_job_per_pair_and_resumes(cohort: Path, tmp_path: Path):
    pair_dirs = [cohort / "pairs" / p for p in PATIENTS]
    register_shard(METHOD, pair_dirs, tmp_path / "shard", tmp_path / "shard.json", device="cpu", batch_size=2)
    for pair_dir in pair_dirs:
        register_shard(METHOD, [pair_dir], tmp_path / "single", tmp_path / f"{pair_dir.name}.json", device="cpu", batch_size=1)
    for patient in PATIENTS:
        sharded, _ = read_displacement(tmp_path / "shard" / patient / "displacement.nii.gz")
        single, _ = read_displacement(tmp_path / "single" / patient / "displacement.nii.gz")
        assert np.abs(sharded).max() > 0.05  # it moved
        np.testing.assert_allclose(sharded, single, atol=1e-4)

    # A job killed after its first patient: the rerun redoes only the others.
    shutil.rmtree(tmp_path / "shard" / "patient002")
    (tmp_path / "shard" / "patient003" / "run.json").write_text("{trunc")
    done = mtimes(tmp_path / "shard" / "patient001")
    register_shard(METHOD, pair_dirs, tmp_path / "shard", tmp_path / "shard.json", device="cpu", batch_size=2)
    statuses = json.loads((tmp_path / "shard.json").read_text())["patients"]
    assert [statuses[p].get("resumed", False) for p in PATIENTS] == [True, False, False]
    assert mtimes(tmp_path / "shard" / "patient001") == done
    assert (tmp_path / "shard" / "patient002" / "displacement.nii.gz").is_file()


def test_register_with_metrics_writes_the_table_evaluate_writes(cohort: Path, tmp_path: Path):
    # The workflow's register job evaluates its results itself: the same rows as `featreg evaluate` after it.
    pair_dirs = [str(cohort / "pairs" / p) for p in PATIENTS]
    method_file = tmp_path / "ncc.json"
    method_file.write_text(METHOD.to_json())
    results = str(tmp_path / "ncc")
    assert main(["register", "--method-file", str(method_file), "--pairs", *pair_dirs, "--out-dir", results,
                 "--manifest", str(tmp_path / "ncc-shard.json"), "--device", "cpu",
                 "--metrics", str(tmp_path / "in-job.csv")]) == 0  # fmt: skip
    assert main(["evaluate", "--pairs", *pair_dirs, "--method-file", str(method_file), "--results-dir", results,
                 "--out", str(tmp_path / "separate.csv")]) == 0  # fmt: skip
    in_job = pd.read_csv(tmp_path / "in-job.csv")
    assert list(in_job["patient"]) == PATIENTS and (in_job["status"] == "ok").all() and (in_job["method"] == "ncc").all()
    pd.testing.assert_frame_equal(in_job, pd.read_csv(tmp_path / "separate.csv"))


def test_jobs_read_their_pairs_from_the_shard_manifests(cohort: Path, tmp_path: Path):
    # The workflow's commands: `--shard` (a preprocess or feature manifest) instead of the pair folders.
    acdc = str(cohort / "acdc")
    assert main(["preprocess", "--root", acdc, "--out", str(tmp_path / "pairs"), "--patients", *PATIENTS[:2],
                 "--manifest", str(tmp_path / "pairs.json"), "--metrics", str(tmp_path / "initial.csv")]) == 0  # fmt: skip
    pair_dirs = [str(tmp_path / "pairs" / p) for p in PATIENTS[:2]]
    assert json.loads((tmp_path / "pairs.json").read_text())["pairs"] == pair_dirs
    assert main(["evaluate", "--pairs", *pair_dirs, "--out", str(tmp_path / "evaluated.csv")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "initial.csv"), pd.read_csv(tmp_path / "evaluated.csv"))

    spec = tmp_path / "mind.json"
    spec.write_text('{"mind": {"kind": "mind", "grid": 16}}')
    assert main(["features", "--encoders", str(spec), "--encoder", "mind", "--shard", str(tmp_path / "pairs.json"),
                 "--out-dir", str(tmp_path / "features"), "--manifest", str(tmp_path / "features.json")]) == 0  # fmt: skip
    record = json.loads((tmp_path / "features.json").read_text())
    assert record["pairs"] == pair_dirs and record["spec"]["kind"] == "mind" and record["spec"]["grid"] == 16
    assert record["features"] == {p: str(tmp_path / "features" / f"{p}.pt") for p in PATIENTS[:2]}

    method = Method("mind-l1-v1", encoder="mind", distance="l1", alpha=1.0, settings=METHOD.settings)
    method_file = tmp_path / "mind.method.json"
    method_file.write_text(method.to_json())
    common = ["register", "--method-file", str(method_file), "--device", "cpu", "--batch-size", "2"]
    assert main([*common, "--shard", str(tmp_path / "features.json"), "--out-dir", str(tmp_path / "from-shard"),
                 "--manifest", str(tmp_path / "a.json")]) == 0  # fmt: skip
    assert main([*common, "--pairs", *pair_dirs, "--encoders", str(spec), "--features", str(tmp_path / "features.json"),
                 "--out-dir", str(tmp_path / "explicit"), "--manifest", str(tmp_path / "b.json")]) == 0  # fmt: skip
    for patient in PATIENTS[:2]:
        from_shard, _ = read_displacement(tmp_path / "from-shard" / patient / "displacement.nii.gz")
        explicit, _ = read_displacement(tmp_path / "explicit" / patient / "displacement.nii.gz")
        assert np.abs(from_shard).max() > 0.01
        np.testing.assert_array_equal(from_shard, explicit)  # same spec, same fingerprint, same result


def test_a_feature_manifest_of_another_encoder_is_refused(tmp_path: Path):
    spec = EncoderSpec.from_dict("mind", {"kind": "mind", "grid": 16})
    manifest = write_feature_manifest(tmp_path / "features.json", spec, build_encoder(spec), pairs=[], features={})
    mind = Method("mind-l1-v1", encoder="mind", distance="l1", alpha=1.0, settings=METHOD.settings)
    assert method_encoder_spec(mind, None, manifest).grid == 16
    dino = Method("dinov2-l1-v1", encoder="dinov2", distance="l1", alpha=1.0, settings=METHOD.settings)
    with pytest.raises(ConfigError, match=f"method dinov2-l1-v1 uses encoder dinov2, but {manifest} holds mind's features"):
        method_encoder_spec(dino, None, manifest)


def test_a_shard_manifest_that_is_not_one_is_one_line(tmp_path: Path, capsys):
    (tmp_path / "bad.json").write_text('{"patients": {}}')
    for manifest in ("bad.json", "missing.json"):
        assert main(["evaluate", "--shard", str(tmp_path / manifest), "--out", str(tmp_path / "m.csv")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"featreg evaluate: error: file {tmp_path / 'bad.json'}: not a shard manifest (JSON with a 'pairs' list): 'pairs'",
        f"featreg evaluate: error: file {tmp_path / 'missing.json'}: shard manifest does not exist",
    ]


def test_auto_batch_size_is_logged_in_run_json_and_a_bad_one_is_one_line(cohort: Path, tmp_path: Path, capsys):
    pair_dirs = [cohort / "pairs" / p for p in PATIENTS]
    register_shard(METHOD, pair_dirs, tmp_path / "auto", tmp_path / "auto.json", device="cpu", batch_size="auto")
    for patient in PATIENTS:
        run = json.loads((tmp_path / "auto" / patient / "run.json").read_text())
        assert run["batch_size"] == 3  # the CPU batch (8), capped by the shard's 3 pairs
        assert run["batch_sizing"] == {"requested": "auto", "batch_size": 3, "rule": "fixed 8 on cpu"}
    method_file = tmp_path / "ncc.json"
    method_file.write_text(METHOD.to_json())
    assert main(["register", "--method-file", str(method_file), "--pairs", str(pair_dirs[0]), "--out-dir", str(tmp_path),
                 "--manifest", str(tmp_path / "m.json"), "--batch-size", "many"]) == 2  # fmt: skip
    assert "--batch-size: must be a positive integer or 'auto', got 'many'" in capsys.readouterr().err


def test_auto_batch_size_probes_a_method_that_encodes_once_with_the_cached_maps(cohort: Path, tmp_path: Path, monkeypatch):
    """The CUDA probe registers the sample pair as the loop will: encoding once, with both cached maps and no encoder."""
    import featreg.jobs.register as register_job

    spec = EncoderSpec.from_dict("mind", {"kind": "mind", "grid": 32})
    pair_dirs = [cohort / "pairs" / p for p in ("patient001", "patient003")]
    features_shard(spec, pair_dirs, tmp_path / "features", tmp_path / "features.json", device="cpu", moving=True)
    probed = {}

    def probe_on_cpu(fixed, moving, settings, *, spacing, encoder, device, limit, fixed_features=None, moving_features=None):
        # what batching.pair_footprint_bytes runs on a CUDA device, here on the CPU
        register_pairs(fixed, moving, settings, spacing=spacing, encoder=encoder, fixed_features=fixed_features,
                       moving_features=moving_features, device=device, progress_every_s=None)
        probed.update(encoder=encoder, fixed=tuple(fixed_features.shape), moving=tuple(moving_features.shape))
        return 2, {"requested": "auto", "batch_size": 2, "rule": "probed"}

    monkeypatch.setattr(register_job, "auto_batch_size", probe_on_cpu)
    once = Method("mind-l1-v1-once", encoder="mind", distance="l1", alpha=1.0, settings={**METHOD.settings, "encode": "once"})
    register_shard(once, pair_dirs, tmp_path / "out", tmp_path / "m.json", encoder_spec=spec,
                   features_manifest=tmp_path / "features.json", device="cpu", batch_size="auto")
    assert probed == {"encoder": None, "fixed": (1, 12, 32, 32), "moving": (1, 12, 32, 32)}
    assert json.loads((tmp_path / "out" / "patient001" / "run.json").read_text())["batch_size"] == 2


def test_a_pair_with_another_spacing_fails_alone(cohort: Path, tmp_path: Path):
    from dataclasses import replace

    from featreg.data.pairs import load_pair, write_pair

    pairs = tmp_path / "pairs"
    shutil.copytree(cohort / "pairs", pairs)
    odd = load_pair(pairs / "patient002")
    shutil.rmtree(pairs / "patient002")
    write_pair(replace(odd, spacing=(1.5, 1.5), provenance={**odd.provenance, "spacing": [1.5, 1.5]}), pairs / "patient002")
    register_shard(METHOD, [pairs / p for p in PATIENTS], tmp_path / "ncc", tmp_path / "ncc.json", device="cpu", batch_size=3)
    statuses = json.loads((tmp_path / "ncc.json").read_text())["patients"]
    assert [statuses[p]["status"] for p in PATIENTS] == ["ok", "failed", "ok"]
    assert "spacing (1.5, 1.5) mm differs from the batch's" in statuses["patient002"]["reason"]


def test_synth_ids_needs_a_manifest(tmp_path: Path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--ids", "patient001"]) == 2
    assert "--manifest" in capsys.readouterr().err


def test_elastix_shard_writes_every_method_output_and_resumes(cohort: Path, tmp_path: Path):
    from featreg.data.nifti import read_nifti

    method = Method("elastix", kind="elastix", settings={"resolutions": 2, "iterations": 60, "bending_weight": 0.1})
    pair_dirs = [str(cohort / "pairs" / p) for p in PATIENTS[:2]]
    method_file = tmp_path / "elastix.method.json"
    method_file.write_text(method.to_json())
    command = ["register", "--method-file", str(method_file), "--pairs", *pair_dirs, "--out-dir",
               str(tmp_path / "elastix"), "--manifest", str(tmp_path / "elastix.json"), "--threads", "2"]
    assert main(command) == 0
    result = tmp_path / "elastix" / "patient001"
    run = json.loads((result / "run.json").read_text())
    assert run["status"] == "ok" and run["iterations"] == 120 and run["threads"] == 2
    assert run["parameter_maps"][0]["Metric"] == ["AdvancedNormalizedCorrelation", "TransformBendingEnergyPenalty"]
    assert run["seconds"] > 0 and run["engine"].startswith("itk-elastix ")
    field, spacing = read_displacement(result / "displacement.nii.gz")
    label, _ = read_nifti(result / "warped_label.nii.gz")
    assert np.abs(field).max() > 0.1 and np.allclose(spacing, (1.8, 1.8))
    assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1, 2, 3}

    evaluate_shard(pair_dirs, tmp_path / "metrics.csv", method=method, results_dir=tmp_path / "elastix")
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert set(table["variant"]) == {"classical"} and (table["status"] == "ok").all()
    assert (table["iterations"] == 120).all() and table["dice_mean"].notna().all()

    done = mtimes(tmp_path / "elastix")
    assert main(command) == 0
    assert mtimes(tmp_path / "elastix") == done  # a rerun registers nothing again
    statuses = json.loads((tmp_path / "elastix.json").read_text())["patients"]
    assert all(status.get("resumed") for status in statuses.values())
