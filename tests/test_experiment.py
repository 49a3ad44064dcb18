"""The config expansion: splits, tuning grids, budgets, paper rows and the selection record."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from snakemake.utils import validate

from featreg.errors import ConfigError, InputError
from featreg.experiment.plan import ExperimentPlan, registrations_per_encoder
from featreg.registration.settings import RegistrationSettings
from featreg.experiment.selection_record import read_selection
from featreg.experiment.method_file import load_method_file, write_method_file
from featreg.experiment.tuning import PAPER_SETTINGS, expand_grid, tuning_plan
from featreg.experiment.splits import experiment_patients, shard_patients, split_patients, synthetic_role_number
from featreg.experiment.methods import Method, check_methods, encoder_specs, method_table
from featreg.jobs.tuning import select_tuned

REGISTRATION = {"lattice": [24, 24], "order": 3, "lam": 120.0, "lr": 0.002, "iterations": 20}
SCHEMA = Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml"


def validated(config: dict) -> dict:
    """``config`` checked against the workflow's schema, with its defaults filled in (as the Snakefile does)."""
    validate(config, str(SCHEMA))
    return config


def config(tuned: bool = True, **tuning) -> dict:
    """A small validated config; ``tuning`` entries override its tuning block (none when not ``tuned``)."""
    return validated({
        "name": "t",
        "dataset": {"kind": "synthetic", "root": "r", "split": [1, 2], "synthetic": {"patients": 6, "seed": 0}},
        "registration": dict(REGISTRATION),
        "encoders": {"mind": {"kind": "mind"}},
        "baseline": "ncc",
        "methods": {"ncc": {"alpha": 0}},
        "grid": {"encoders": ["mind"], "distances": ["cosine"], "variants": ["feature", "combined"]},
        **({"tuning": {"split": [3, 4], "grid": {"lam": [30.0, 240.0]}, **tuning}} if tuned else {}),
    })


def cohort(n: int) -> list[str]:
    return [f"patient{k:03d}" for k in range(1, n + 1)]


def test_acdc_ranges_and_explicit_lists():
    assert split_patients(cohort(150), "val") == [f"patient{k}" for k in range(101, 121)]
    assert len(split_patients(cohort(150), "test")) == 30
    assert split_patients(cohort(150), "val", synthetic_seed=3) == split_patients(cohort(150), "val")
    assert split_patients(cohort(6), [4, "patient002"]) == ["patient004", "patient002"]
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        split_patients(cohort(6), "dev")


def test_small_synthetic_cohort_takes_roles_by_seed():
    roles = {k: synthetic_role_number(0, k) for k in range(1, 25)}
    assert all(1 <= r <= 150 for r in roles.values())
    assert synthetic_role_number(0, 5) == roles[5] and synthetic_role_number(1, 5) != roles[5]
    val = split_patients(cohort(24), "val", synthetic_seed=0)
    assert val == [f"patient{k:03d}" for k, r in roles.items() if 101 <= r <= 120] and val
    # a patient's role does not depend on the cohort size
    assert set(val) <= set(split_patients(cohort(40), "val", synthetic_seed=0))
    test = split_patients(cohort(24), "test", synthetic_seed=0)
    assert test and not set(test) & set(val)


def test_experiment_patients_refuses_overlap_and_empty_splits():
    test, val = experiment_patients(config(), cohort(6))
    assert (test, val) == (["patient001", "patient002"], ["patient003", "patient004"])
    assert experiment_patients(config(tuned=False), cohort(6))[1] == []
    with pytest.raises(ConfigError, match=r"overlap in 1 patient\(s\) \(patient002\)"):
        experiment_patients(config(split=[2, 3]), cohort(6))
    empty = config()
    empty["dataset"]["split"] = "test"
    with pytest.raises(ConfigError, match="dataset.split 'test' selects no patient"):
        experiment_patients(empty | {"dataset": {**empty["dataset"], "kind": "acdc"}}, cohort(6))


def test_validation_shards_have_their_own_prefix():
    assert shard_patients(["patient103", "patient101", "patient102"], 2, prefix="v") == {
        "v000": ["patient101", "patient102"], "v001": ["patient103"]}


def test_grid_points_are_named_by_their_values():
    base = Method("mind-cosine-v2", 0.3, "mind", "cosine", {**REGISTRATION, "control_spacing_px": None})
    points = expand_grid(base, {"lr": [0.0005, 0.002], "lam": [60.0], "lattice": [[12, 12]], "alpha": [0.5]})
    assert list(points) == ["mind-cosine-v2@lam60_lr0.0005_lat12x12_a0.5", "mind-cosine-v2@lam60_lr0.002_lat12x12_a0.5"]
    point = points["mind-cosine-v2@lam60_lr0.0005_lat12x12_a0.5"]
    assert point.alpha == 0.5 and point.variant == "combined" and point.encoder == "mind"
    assert point.settings["lr"] == 0.0005 and point.settings["lattice"] == [12, 12]
    assert "control_spacing_px" not in point.settings and point.settings["order"] == 3
    # adding a value adds a name and keeps the others
    assert set(expand_grid(base, {"lam": [30.0, 60.0]})) < set(expand_grid(base, {"lam": [30.0, 60.0, 90.0]}))
    with pytest.raises(ConfigError, match="unknown key"):
        expand_grid(base, {"beta": [1]})
    with pytest.raises(ConfigError, match="lam repeats a value"):
        expand_grid(base, {"lam": [60, 60.0]})
    with pytest.raises(ConfigError, match="alpha is tuned only for a variant-2 method .*, not a baseline one"):
        expand_grid(Method("ncc"), {"alpha": [0.5]})
    with pytest.raises(ConfigError, match="not a feature one"):
        expand_grid(Method("mind-cosine-v1", 1.0, "mind", "cosine"), {"alpha": [0.5]})
    with pytest.raises(ConfigError, match="strictly between 0 and 1 .*, got \\[1.0\\]"):
        expand_grid(base, {"alpha": [0.3, 1.0]})


def test_tuning_plan_same_budget_baseline_and_paper_rows():
    cfg = config()
    methods = method_table(cfg)
    plan = tuning_plan(cfg, methods)
    assert set(plan.grids) == {"ncc", "mind-cosine-v1", "mind-cosine-v2"} and plan.budget == 2
    assert plan.tuned == {"ncc@tuned": "ncc", "mind-cosine-v1@tuned": "mind-cosine-v1",
                          "mind-cosine-v2@tuned": "mind-cosine-v2"}
    paper = plan.paper["ncc"]
    paper_settings = cfg["tuning"]["paper_settings"]  # the schema's default: the paper's
    assert paper_settings == PAPER_SETTINGS  # and the constant the engine's paper preset is checked against
    assert paper.name == "ncc@paper"
    assert {k: paper.settings[k] for k in paper_settings} == paper_settings and paper.settings["order"] == 3
    assert tuning_plan(config(tuned=False), methods) is None

    at_paper = config()
    at_paper["registration"] |= paper_settings
    assert tuning_plan(at_paper, method_table(at_paper)).paper["ncc"].name == "ncc"  # already the paper's

    uneven = config(grids={"mind-cosine-v2": {"lam": [30.0, 60.0, 240.0]}})
    with pytest.raises(ConfigError, match="ncc 2, mind-cosine-v1 2, mind-cosine-v2 3 grid points"):
        tuning_plan(uneven, methods)
    same = config(grids={"mind-cosine-v2": {"lam": [30.0], "alpha": [0.3, 0.6]}})
    assert list(tuning_plan(same, methods).grids["mind-cosine-v2"]) == [
        "mind-cosine-v2@lam30_a0.3", "mind-cosine-v2@lam30_a0.6"]
    with pytest.raises(ConfigError, match="must include the baseline 'ncc'"):
        tuning_plan(config(methods=["mind-cosine-v1"]), methods)
    with pytest.raises(ConfigError, match="unknown method"):
        tuning_plan(config(methods=["ncc", "nope"]), methods)
    with pytest.raises(ConfigError, match="not tuned: mind-cosine-v1"):
        tuning_plan(config(methods=["ncc"], grids={"mind-cosine-v1": {"lam": [1.0, 2.0]}}), methods)


def validation_table(rows: list[tuple[str, float, float, float]], n: int = 3) -> pd.DataFrame:
    """Per-pair rows of (method, Dice, %J<=0, sdlogJ), identical for the n patients."""
    return pd.DataFrame([
        {"method": m, "patient": f"patient{k:03d}", "dice_mean": d, "neg_jac_pct": j, "sdlogj": s}
        for m, d, j, s in rows for k in range(n)
    ])


def test_selection_record_applies_the_rule(tmp_path):
    cfg = config(grid={"lam": [30.0, 60.0, 240.0]})
    spec = tuning_plan(cfg, method_table(cfg)).selection_spec("ncc")
    table = validation_table([("ncc@lam30", 0.85, 0.5, 0.4), ("ncc@lam60", 0.80, 0.05, 0.3),
                              ("ncc@lam240", 0.80, 0.02, 0.2), ("other", 0.99, 0.0, 0.1)])
    record = select_tuned(spec, table)
    assert record["selected"] == "ncc@lam240"  # lam30 folds too much; 60 and 240 tie on Dice, 240 folds less
    assert record["values"] == {"lam": 240.0} and record["paper"] == "ncc@paper"
    assert [c["eligible"] for c in record["candidates"]] == [False, True, True]
    assert record["rule"]["max_neg_jac_pct"] == 0.1 and "ties" in record["rule"]
    write_method_file(Method(**record["method"]), tmp_path / "ncc@tuned.json")
    tuned = load_method_file(tmp_path / "ncc@tuned.json")
    assert tuned.name == "ncc@tuned" and tuned.settings["lam"] == 240.0 and tuned.settings["lr"] == 0.002

    folding = validation_table([("ncc@lam30", 0.85, 0.5, 0.4), ("ncc@lam60", 0.8, 0.3, 0.3),
                                ("ncc@lam240", 0.8, 0.2, 0.2)])
    # no point meets the limit: the one that folds least is taken rather than the job failing
    fallback = select_tuned(spec, folding)
    assert fallback["selected"] == "ncc@lam240" and fallback["method"]["settings"]["lam"] == 240.0
    with pytest.raises(InputError, match="lack grid point\\(s\\) of ncc: ncc@lam240"):
        select_tuned(spec, folding[folding["method"] != "ncc@lam240"])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InputError, match="not a selection record"):
        read_selection(tmp_path / "bad.json")
    with pytest.raises(InputError, match="bad.json: not a method file: expected the entries alpha, distance"):
        load_method_file(tmp_path / "bad.json")


def test_selection_excludes_grid_points_that_failed_on_a_validation_pair():
    cfg = config()
    spec = tuning_plan(cfg, method_table(cfg)).selection_spec("ncc")
    table = validation_table([("ncc@lam30", 0.85, 0.0, 0.4), ("ncc@lam240", 0.80, 0.0, 0.2)])
    table.loc[(table["method"] == "ncc@lam30") & (table["patient"] != "patient000"), "dice_mean"] = np.nan
    record = select_tuned(spec, table)
    # lam30's one surviving pair has the better Dice, but it failed on two of the three pairs
    assert record["selected"] == "ncc@lam240"
    assert [(c["n"], c["eligible"]) for c in record["candidates"]] == [(1, False), (3, True)]
    table.loc[(table["method"] == "ncc@lam240") & (table["patient"] == "patient001"), "neg_jac_pct"] = np.nan
    with pytest.raises(InputError, match="no setting has a finite dice_mean and neg_jac_pct on all 3 pairs"):
        select_tuned(spec, table)


def test_alpha_sweep_names_keep_every_digit():
    cfg = config(tuned=False) | {"alpha_sweep": {"encoder": "mind", "distance": "cosine",
                                                 "alphas": [0.001, 0.12, 0.125, 0.3]}}
    names = [name for name in method_table(cfg) if "-a" in name]
    assert names == ["mind-cosine-a0.001", "mind-cosine-a0.12", "mind-cosine-a0.125"]  # 0.3 is the v2 point
    assert method_table(cfg)["mind-cosine-a0.125"].alpha == 0.125


def test_paper_config_tunes_alpha_on_validation_with_an_equal_budget():
    paper = validated(yaml.safe_load((Path(__file__).parents[1] / "config/paper.yaml").read_text(encoding="utf-8")))
    methods = method_table(paper)
    plan = tuning_plan(paper, methods)
    assert len(plan.grids) == 14 and {len(grid) for grid in plan.grids.values()} == {plan.budget}
    for base, keys in plan.keys.items():
        expected = {"combined": ("lam", "alpha"), "classical": ("iterations", "bending_weight")}
        assert keys == expected.get(methods[base].variant, ("lam", "lr")), base
    v2 = plan.grids["sam-cosine-v2"].values()
    assert {m.alpha for m in v2} == {0.1, 0.3, 0.6} and {m.settings["lr"] for m in v2} == {PAPER_SETTINGS["lr"]}
    # the paper-settings row keeps the fixed combined_alpha; only the tuned row chooses α (on validation)
    assert plan.paper["sam-cosine-v2"].name == "sam-cosine-v2" and plan.paper["sam-cosine-v2"].alpha == 0.3
    assert paper["tuning"]["split"] == "val" and paper["dataset"]["split"] == "test"


def elastix_config(**settings) -> dict:
    """config() with an elastix method whose own grid has the FFD's budget (2 points)."""
    cfg = config(grids={"elastix": {"bending_weight": [0.01, 0.1]}})
    cfg["methods"]["elastix"] = {"kind": "elastix", "settings": {"iterations": 50, **settings}}
    return validated(cfg)


def test_elastix_method_is_classical_with_its_own_settings_and_budget():
    cfg = elastix_config()
    methods = method_table(cfg)
    elastix = methods["elastix"]
    assert elastix.kind == "elastix" and elastix.variant == "classical"
    assert dict(elastix.settings) == {"iterations": 50}  # the registration block is the FFD's, not elastix's
    plan = tuning_plan(cfg, methods)
    assert list(plan.grids["elastix"]) == ["elastix@bw0.01", "elastix@bw0.1"]
    assert plan.budget == 2 and plan.paper["elastix"] is elastix  # the paper has no elastix row to reproduce
    point = plan.grids["elastix"]["elastix@bw0.1"]
    assert point.kind == "elastix" and dict(point.settings) == {"iterations": 50, "bending_weight": 0.1}
    record = select_tuned(plan.selection_spec("elastix"),
                          validation_table([("elastix@bw0.01", 0.80, 0.0, 0.3), ("elastix@bw0.1", 0.85, 0.0, 0.2)]))
    tuned = Method(**record["method"])
    assert (tuned.name, tuned.kind, tuned.settings["bending_weight"]) == ("elastix@tuned", "elastix", 0.1)


def test_bad_elastix_settings_fail_when_the_config_is_read():
    with pytest.raises(ConfigError, match=r"^method elastix: elastix metric must be one of \[.*\], got 'NCC'$"):
        method_table(elastix_config(metric="NCC"))
    with pytest.raises(ConfigError, match=r"^method elastix: elastix grid_spacing_mm must be a number > 0, got -10$"):
        method_table(elastix_config(grid_spacing_mm=-10))
    cfg = elastix_config()
    cfg["methods"]["elastix"]["alpha"] = 0.5
    with pytest.raises(ConfigError, match="^method elastix: an elastix method takes no alpha, encoder or distance$"):
        method_table(cfg)
    cfg = elastix_config()
    cfg["tuning"]["grids"] = {"elastix": {"lam": [30.0, 240.0]}}
    with pytest.raises(ConfigError, match=r"tuning grid of elastix: unknown key\(s\) lam for kind elastix "):
        tuning_plan(cfg, method_table(cfg))


def test_registrations_per_encoder_counts_test_paper_tuned_and_grid_runs():
    # 2 test and 2 validation patients; ncc, mind-cosine-v1, mind-cosine-v2 all tuned with 2 grid points.
    # Test split: 3 methods + 3 @paper rows (the settings are not the paper's) + 3 @tuned = 9 x 2 patients;
    # validation: 3 methods x 2 points x 2 patients. ncc is one of each three, mind two.
    assert registrations_per_encoder(config(), cohort(6)) == {None: 3 * 2 + 2 * 2, "mind": 6 * 2 + 4 * 2}
    assert registrations_per_encoder(config(tuned=False), cohort(6)) == {None: 2, "mind": 4}


def test_every_method_and_encoder_is_parsed_as_its_job_parses_it():
    cfg = config()
    methods = method_table(cfg)
    plan = tuning_plan(cfg, methods)
    every = methods | plan.grid_methods | {m.name: m for m in plan.paper.values()}
    check_methods(cfg, every)
    assert set(encoder_specs(cfg)) == {"mind"}

    typo = config()
    typo["registration"]["lamda"] = 10
    with pytest.raises(ConfigError, match=r"^registration: unknown registration setting\(s\): lamda; known: alpha, "):
        check_methods(typo, method_table(typo))
    own = config()
    own["methods"]["ncc"]["settings"] = {"iteration": 5}
    with pytest.raises(ConfigError, match=r"^method ncc: unknown registration setting\(s\): iteration; known: "):
        check_methods(own, method_table(own))
    point = config(grid={"lattice": [[24, 24], [2, 2]]})  # a tuning point the engine refuses
    grid = tuning_plan(point, method_table(point)).grid_methods
    with pytest.raises(ConfigError, match=r"^method ncc@lat2x2: lattice needs at least 4 control points"):
        check_methods(point, grid)
    encoder = config()
    encoder["encoders"]["mind"]["gird"] = 32
    with pytest.raises(ConfigError, match=r"^encoder 'mind': unknown field\(s\) gird; known fields: kind, "):
        encoder_specs(encoder)


def test_manifest_splits_follow_its_split_column_and_ids_sort_naturally():
    cfg = config()
    cfg["dataset"] = {"kind": "manifest", "root": "cohort.csv", "split": "test", "synthetic": {"patients": 1, "seed": 0}}
    cfg["tuning"]["split"] = "val"
    ids = ["case10", "case2", "case1", "case3"]
    roles = {"case10": "test", "case2": "test", "case1": "val", "case3": None}
    assert experiment_patients(cfg, ids, roles) == (["case2", "case10"], ["case1"])
    assert shard_patients(ids, 3) == {"s000": ["case1", "case2", "case3"], "s001": ["case10"]}
    with pytest.raises(ConfigError, match="dataset.split 'test' needs the manifest's split column"):
        experiment_patients(cfg, ids, None)


def test_experiment_plan_derives_every_table_the_workflow_reads():
    plan = ExperimentPlan.build(config(methods=["ncc", "mind-cosine-v2"]))
    assert plan.patients == ["patient001", "patient002"] and plan.val_patients == ["patient003", "patient004"]
    assert plan.figure_patient == "patient001"
    assert plan.tuned == {"ncc@tuned": "ncc", "mind-cosine-v2@tuned": "mind-cosine-v2"}
    # paper rows join the configured methods on test; grid points run on validation only
    assert set(plan.test_methods) == {"ncc", "mind-cosine-v1", "mind-cosine-v2", "ncc@paper", "mind-cosine-v2@paper"}
    assert set(plan.grid_methods) == {f"{m}@lam{v}" for m in ("ncc", "mind-cosine-v2") for v in ("30", "240")}
    assert plan.runnable == plan.test_methods | plan.grid_methods
    assert plan.reported == ["initial", *plan.test_methods, "ncc@tuned", "mind-cosine-v2@tuned"]
    # a tuned method takes its base method's encoder and engine
    assert plan.encoder_of["mind-cosine-v2@tuned"] == "mind" and plan.encoder_of["ncc@tuned"] is None
    assert set(plan.methods_of_kind("ffd")) == set(plan.runnable) | set(plan.tuned)
    assert plan.methods_of_kind("elastix") == []
    assert plan.shards == {"s000": ["patient001", "patient002"]} and plan.val_shards == {"v000": ["patient003", "patient004"]}
    # the dry run's count: every test row on the test patients, every grid point on the validation ones
    runs = (len(plan.test_methods) + len(plan.tuned)) * 2 + len(plan.grid_methods) * 2
    assert sum(plan.registrations().values()) == runs
    assert plan.summary().startswith(f"{runs} registrations (7 methods x 2 test patients; tuning: 2 methods x 2 grid")


def test_experiment_plan_refuses_a_figure_patient_outside_the_test_split():
    bad = config()
    bad["figures"]["patient"] = "patient003"
    with pytest.raises(ConfigError, match="figures.patient 'patient003' is not among the test patients"):
        ExperimentPlan.build(bad)


def test_grid_encode_modes_name_rows_by_their_mode_and_plan_their_encoder_passes():
    cfg = config(tuned=False)
    cfg["grid"]["encode"] = ["each_iteration", "once"]
    plan = ExperimentPlan.build(cfg)
    methods = plan.methods
    # the registration block's mode keeps its names and settings; the other mode is a -once row
    assert methods["mind-cosine-v1"].settings == cfg["registration"] and methods["mind-cosine-v1"].encode == "each_iteration"
    assert methods["mind-cosine-v1-once"].settings == cfg["registration"] | {"encode": "once"}
    assert methods["mind-cosine-v2-once"].alpha == 0.3 and methods["ncc"].encode is None
    assert plan.encodes_once("mind")
    # each_iteration: a pass per registration and iteration; once: one pass per moving image (2 test patients)
    assert plan.encoder_passes() == {"mind": {"each_iteration": 2 * 2 * 20, "once": 2}}
    assert "projected encoder passes: mind 80 forward+backward (each_iteration), 2 forward (once)" in plan.summary()
    del cfg["registration"]["iterations"]  # unset: the registration's own default, 1500
    assert ExperimentPlan.build(cfg).encoder_passes()["mind"]["each_iteration"] == 2 * 2 * RegistrationSettings().iterations == 6000
    # with the registration block encoding once, the plain names are the once rows
    cfg = config(tuned=False)
    cfg["registration"]["encode"] = "once"
    cfg["grid"]["encode"] = ["once", "each_iteration"]
    methods = ExperimentPlan.build(cfg).methods
    assert methods["mind-cosine-v1"].encode == "once" and methods["mind-cosine-v1-each"].encode == "each_iteration"
