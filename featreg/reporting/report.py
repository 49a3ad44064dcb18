"""The whole report from a metrics table: summary.csv, tables, figures and report.html in one folder."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from featreg.data.pairs import middle_pair, pair_labels, pair_name
from featreg.io import write_text_atomic
from featreg.errors import ConfigError, InputError
from featreg.reporting import figures
from featreg.reporting.answer import answer_sections
from featreg.reporting.comparisons import (
    Family,
    comparison_families,
    family_tests,
    method_table,
    method_table_caption,
    settings_of,
)
from featreg.registration.run_record import devices
from featreg.reporting.cost import pair_seconds, read_seconds
from featreg.reporting.html import Section, write_report
from featreg.reporting.tuning import (
    edge_warnings,
    grid_frame,
    pareto_metrics,
    read_selections,
    settings_labels,
    tuning_frame,
)
from featreg.reporting.tables import (
    CONVENTIONS,
    PAPER_TABLE1,
    metric_definitions,
    read_paper_table,
    reproduction_caption,
    reproduction_frame,
    reproduction_table,
    summary_table,
    table1_frame,
    table1_header,
    table1_markdown,
)  # fmt: skip
from featreg.evaluation.metrics_table import class_names, patient_means, read_metrics

logger = logging.getLogger(__name__)


def build_report(
    metrics_csv: str | Path,
    out_dir: str | Path,
    *,
    baseline: str = "ncc",
    pairs_dir: str | Path | None = None,
    results_dir: str | Path | None = None,
    config: str | Path | None = None,
    feature_figures_dir: str | Path | None = None,
    alpha_family: tuple[str, str] | None = None,
    paper_csv: str | Path = PAPER_TABLE1,
    figure_patient: str | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
    validation_csv: str | Path | None = None,
    selection_jsons: Sequence[str | Path] = (),
) -> dict[str, Path]:
    """Write summary.csv, statistics.csv, table1.md, reproduction.md, the figures and report.html.

    The page opens with the answer: per comparison family
    (``featreg.reporting.comparisons``) one sentence, the best method in mean Dice,
    the counts of better, worse and not significantly different methods and a
    forest plot, then mean Dice against seconds per pair; the per-method verdict
    tables, Table 1 (with seconds per pair and the device, read from each pair's
    run.json under ``results_dir``) and the accuracy-against-smoothness figure
    follow; the per-family test tables come later, collapsed. statistics.csv
    holds every test of every family. With a tuning run (``validation_csv``, the
    grid's validation metrics, and the ``selection_jsons`` of ``featreg
    select-setting``) also tuning.csv (every grid point with its means,
    eligibility and Pareto-front membership), pareto_validation.png, each
    method's grid with a warning where the selected point lies on its edge, and
    the reproduction table lists only the paper-settings and tuned rows.
    Settings are selected on the validation split only: without
    a tuning run the report selects nothing (a choice made on the test metrics
    would not be a held-out selection).

    ``alpha_family`` is ``(encoder, distance)`` of the α curve; by default the
    pair with the most combined α values (at least two) is drawn. Figures that
    need registration results (``results_dir``) or pairs (``pairs_dir``) are
    skipped with a logged note when those are not given. The Jacobian maps and
    the qualitative panel (of the baseline) show ``figure_patient``; by default
    the first patient with every map, and the baseline's median-Dice patient.
    Returns the written files by name.
    """
    if (validation_csv is None) != (not selection_jsons):
        raise ConfigError("give both the validation metrics and the selection records of a tuning run, or neither")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = read_metrics(metrics_csv)  # one row per pair: per slice when a patient gives several
    df = patient_means(pairs)  # one row per (method, patient): the unit of every statistic
    if figure_patient is not None and figure_patient not in set(df["patient"]):
        raise InputError("the figure patient (figures.patient) has no rows in the metrics table",
                         patient=figure_patient, path=metrics_csv)
    selections = read_selections(selection_jsons)
    defs = metric_definitions()
    n_pairs = df["patient"].nunique()
    written: dict[str, Path] = {}

    families = comparison_families(df, baseline, selections)
    tests = family_tests(df, families, n_resamples=n_resamples, seed=seed)
    written["statistics.csv"] = write_text_atomic(out_dir / "statistics.csv", tests.to_csv(index=False))
    seconds = None
    if results_dir is None:
        logger.info("seconds per pair and the cost figure skipped: no results folder given (--results)")
    else:
        seconds = pair_seconds(read_seconds(results_dir), df)
    answer = answer_sections(df, tests, families, seconds, out_dir, n_resamples, written)
    sections: list[Section] = [Section("Answer", "block", answer, css_class="answer")]
    grids = grid_frame(selections) if selections else None
    edges = edge_warnings(grids) if grids is not None else []
    fallbacks = [f"{r['tuned']} runs {r['selected']}, a fallback: {r['fallback']}" for r in selections
                 if r.get("fallback")]
    cautions = [f"A selected setting on its grid's edge: {w}" for w in edges] + [
        f"No grid point met the folding rule: {f}" for f in fallbacks]
    if cautions:
        sections.append(Section("Caution", "text", "\n\n".join(cautions)))
    sections += [Section(f"Verdict per method: {family.title}", "table", method_table(tests, family),
                         method_table_caption(family, n_resamples, seed)) for family in families]

    summary = summary_table(df)
    written["summary.csv"] = write_text_atomic(out_dir / "summary.csv", summary.to_csv(index=False))
    written["table1.md"] = write_text_atomic(out_dir / "table1.md", table1_markdown(df, tests, baseline, seconds))
    sections.append(Section("Table 1", "table", table1_frame(df, tests, baseline, seconds),
                            table1_header(df, tests, seconds)))

    settings = settings_of(families) if selections else {}
    labelled = df.assign(settings=df["method"].map(lambda m: settings.get(m, "")))
    path = figures.pareto_plot(labelled, out_dir / "pareto.png", family=("settings", "variant", "encoder", "distance"))
    written[path.name] = path
    sections.append(Section("Accuracy against smoothness", "figure", path,
                            f"Per method: mean Dice (unitless) against mean sdlogJ (unitless, left) and mean %J≤0 "
                            f"(percent of pixels, right), means over the pairs with a finite value ({n_pairs} "
                            f"patients); one curve per family (settings, variant, encoder, distance) across its "
                            f"grid; ringed: the Pareto front (maximise Dice, minimise the x metric). A method up "
                            f"and to the right of another gains Dice by folding more. {defs['sdlogj']} "
                            f"{defs['neg_jac_pct']}"))

    sections.append(Section("How this was computed", "text", _provenance(pairs, config, results_dir)))
    failed = df.loc[df["status"].eq("failed"), ["method", "patient", "reason"]]
    if not failed.empty:
        sections.append(Section(
            "Failed pairs", "table", failed.reset_index(drop=True),
            f"{len(failed)} (method, patient) rows failed and are left out of every statistic (their metrics are "
            "NaN in metrics.csv); the reason is the error the job recorded for that pair.",
        ))

    if selections:
        written |= _tuning_sections(patient_means(read_metrics(validation_csv)), selections, grids, out_dir, sections)

    sections += _test_sections(tests, families, n_resamples, seed)

    labels = settings_labels(selections) if selections else None
    written["reproduction.md"] = write_text_atomic(out_dir / "reproduction.md",
                                                   reproduction_table(df, paper_csv, labels))
    paper = read_paper_table(paper_csv)
    sections.append(Section("Reproduction of the paper's Table 1", "table", reproduction_frame(df, paper, labels),
                            reproduction_caption(paper, tuned=bool(selections)), collapsed=True))

    path = figures.dice_boxplot(df, out_dir / "dice_boxplot.png", baseline=baseline)
    written[path.name] = path
    sections.append(Section("Dice per class", "figure", path,
                            f"Dice per class ({', '.join(class_names(df))}) and mean over classes, one box per method, over the "
                            f"{n_pairs} pairs with a finite value (box: quartiles, line: median, whiskers: 1.5 IQR). "
                            f"{defs['dice']}"))

    family = alpha_family or _default_alpha_family(df)
    if family is None:
        logger.info("α curve skipped: no encoder/distance with at least two combined α values")
    else:
        path = figures.alpha_curve(df, out_dir / "alpha_curve.png", encoder=family[0], distance=family[1],
                                   baseline=baseline)
        written[path.name] = path
        sections.append(Section("Influence of α", "figure", path,
                                f"Mean ± std (sample std, ddof = 1) of mean Dice (unitless) and mean HD95 (mm) over "
                                f"the pairs with a finite value, against α for encoder {family[0]} with distance "
                                f"{family[1]}; α = 0 is the baseline {baseline!r}, α = 1 variant 1. {CONVENTIONS}"))

    if results_dir is None:
        logger.info("Jacobian maps and the qualitative panel skipped: no results folder given (--results)")
    else:
        written |= _result_figures(df, Path(results_dir), pairs_dir, out_dir, baseline, figure_patient, sections)

    if feature_figures_dir is not None:
        sections += _feature_sections(Path(feature_figures_dir))

    written["report.html"] = write_report(out_dir / "report.html", sections)
    return written


UNITS = {"dice_mean": "unitless", "hd95_mean": "mm", "sdlogj": "unitless", "neg_jac_pct": "percentage points"}
"""Unit of a paired difference per tested metric."""


def _test_sections(tests: pd.DataFrame, families: Sequence[Family], n_resamples: int, seed: int) -> list[Section]:
    """One collapsed table per family: every method and metric with its test, difference and CI."""
    sections = []
    for family in families:
        rows = tests[tests["family"] == family.key].drop(columns="family")
        rows = rows.assign(unit=rows["metric"].map(UNITS)).round(4)
        sections.append(Section(
            f"Paired tests: {family.title}", "table", rows,
            f"{family.comparison}, per metric: n_pairs patients with a finite value for both; paired two-sided Wilcoxon "
            f"signed-rank test (scipy.stats.wilcoxon, zero differences dropped, p = 1 for identical samples), "
            f"p_holm Holm-corrected across the {len(family.pairs)} comparison(s) of this family per metric; "
            f"mean_diff = mean of (method − reference) in the unit given, with a percentile-bootstrap 95 % CI "
            f"({n_resamples} resamples, seed {seed}). Dice: higher is better; HD95 (mm), sdlogJ and %J≤0 "
            f"(percentage points): lower is better. All families: statistics.csv.",
            collapsed=True,
        ))
    return sections


def _tuning_sections(validation: pd.DataFrame, selections: Sequence[dict], grids: pd.DataFrame, out_dir: Path,
                     sections: list[Section]) -> dict[str, Path]:
    """Each method's grid and selection, and the validation Pareto fronts of a tuning run."""
    written: dict[str, Path] = {}
    defs = metric_definitions()
    rule = selections[0]["rule"]
    n_val = validation.loc[validation["method"].isin(
        [c["method"] for r in selections for c in r["candidates"]]), "patient"].nunique()
    grid = tuning_frame(validation, selections)
    written["tuning.csv"] = write_text_atomic(out_dir / "tuning.csv", grid.to_csv(index=False))
    sections.append(Section(
        "Tuning on the validation split", "table", grids,
        f"Every tuned method ran the same number of grid points ({len(selections[0]['candidates'])}, the grid "
        f"column: values per key, the grid is their product) on {n_val} validation patients, disjoint from the "
        f"test patients. Rule: highest mean {rule['metric']} "
        f"among the grid points with a finite {rule['metric']} and {rule['folding']} on every validation pair "
        f"(a point that failed on a pair is not eligible) whose mean {rule['folding']} (percent of pixels with "
        f"J ≤ 0 over the whole field, averaged over the pairs) is at most {rule['max_neg_jac_pct']} %; ties: "
        f"{rule['ties']}. The selected setting of each method then ran on the test split as '<method>@tuned'. "
        f"edge: a selected value that is the smallest or largest of its key's values, so the grid may be too "
        f"narrow. Every grid point's means and Pareto-front membership: tuning.csv."))
    points, order_by = pareto_metrics(validation, selections)
    path = figures.pareto_plot(points, out_dir / "pareto_validation.png", family=("base", "curve"),
                               order_by=order_by)
    written[path.name] = path
    sections.append(Section(
        "Accuracy against smoothness on the validation split", "figure", path,
        f"Per grid point: mean Dice (unitless) against mean sdlogJ (unitless, left) and mean %J≤0 (percent of "
        f"pixels, right), means over the {n_val} "
        f"validation pairs with a finite value; one curve per method "
        f"{'across its λ grid (elastix: its bending weight; other grid values in the legend)' if order_by else 'across its grid'}; ringed: "
        f"the Pareto front over all grid points (maximise Dice, minimise the x metric); tuning.csv marks "
        f"each method's own front. {defs['sdlogj']} {defs['neg_jac_pct']}"))
    return written


FEATURE_FIGURES = {
    "pca.png": (
        "Encoder features (paper Fig. 2)",
        "First principal components of each encoder's features of one fixed image, shown as RGB "
        "(PCA over the feature grid's pixels, each component min-max scaled to [0, 1]); n = 1 image.",
    ),
    "distance_curves.png": (
        "Feature distance under rigid motion (paper Fig. 3)",
        "Cosine dissimilarity (minus the mean per-pixel cosine across channels) and L1 distance (mean absolute "
        "difference over channels and pixels) between the features of one fixed image and of its rotated "
        "(steps of π/32 over ±90°) or translated (1.2 mm steps over ±57.6 mm) copy; features min-max normalised "
        "to [0, 1] first, as in the paper; n = 1 image.",
    ),
    "commutativity.png": (
        "Encode-then-warp against warp-then-encode (paper Fig. 6)",
        "Features of the warped image against the warped features of the image, for the baseline's "
        "displacement of one pair, with their absolute difference; n = 1 pair.",
    ),
}


def _feature_sections(folder: Path) -> list[Section]:
    """Sections for the feature figures written by ``featreg feature-figures`` (those present)."""
    sections = []
    for name, (title, caption) in FEATURE_FIGURES.items():
        if (folder / name).is_file():
            sections.append(Section(title, "figure", folder / name, caption))
        else:
            logger.info("%s not found in %s: section skipped", name, folder)
    return sections


def contour_legend(pair_dir: Path) -> str:
    """The colour of each label class in the pair's contours, e.g. ``RV red, Myo green, LV blue``."""
    labels = pair_labels(pair_dir)
    colours = figures.label_colours(labels)
    return ", ".join(f"{name} {colours[value].removeprefix('tab:')}" for value, name in labels.items())


def shown_pair(results_dir: Path, method: str, patient: str) -> str:
    """The pair of ``patient`` a figure shows: its own, or its middle slice when it has one pair per slice."""
    return pair_name(middle_pair(results_dir / method / patient))


def _result_figures(df: pd.DataFrame, results_dir: Path, pairs_dir: str | Path | None, out_dir: Path,
                    baseline: str, figure_patient: str | None, sections: list[Section]) -> dict[str, Path]:
    """Jacobian maps (baseline + up to three feature-only methods) and the baseline's qualitative panel.

    Both show ``figure_patient`` when given (InputError when it has no result to
    show); otherwise the maps show the first patient with every map and the
    panel the baseline's median-Dice patient (its middle slice, when it has several).
    """
    written: dict[str, Path] = {}
    desc = df.drop_duplicates("method")
    methods = [baseline] + list(desc.loc[desc["variant"] == "feature", "method"])[:3]
    if figure_patient is not None:
        pair = shown_pair(results_dir, baseline, figure_patient)
        shown = [m for m in methods if (results_dir / m / pair / "displacement.nii.gz").is_file()]
        if not shown:
            raise InputError(f"the figure patient (figures.patient) has no displacement.nii.gz of any of "
                             f"{', '.join(methods)}", patient=figure_patient, path=results_dir)
        patient, choice = pair, "given by figures.patient"
    else:
        shown = methods
        patients = sorted(p for p in df["patient"].unique()
                          if all((results_dir / m / shown_pair(results_dir, baseline, p) / "displacement.nii.gz").is_file()
                                 for m in methods))
        patient = shown_pair(results_dir, baseline, patients[0]) if patients else None
        choice = "the first patient, sorted, with a displacement for every method shown; figures.patient picks one"
    if patient is None:
        logger.info("Jacobian maps skipped: no patient has displacement.nii.gz for %s", ", ".join(methods))
    else:
        path = figures.jacobian_maps(results_dir, shown, patient, out_dir / "jacobian_maps.png")
        written[path.name] = path
        sections.append(Section("Jacobian determinant maps", "figure", path,
                                f"Jacobian determinant J of x ↦ x + u(x) (u in mm, central differences) on "
                                f"{patient} (n = 1 pair; {choice}) for {', '.join(shown)}; colour map centred "
                                f"on J = 1: red shrinkage, blue expansion, J ≤ 0 folding. Unitless."))
    if pairs_dir is None:
        logger.info("qualitative panel skipped: no pairs folder given (--pairs)")
        return written
    rows = df[(df["method"] == baseline) & df["dice_mean"].notna()]
    rows = rows[[(results_dir / baseline / shown_pair(results_dir, baseline, p) / "warped_image.nii.gz").is_file()
                 for p in rows["patient"]]]
    if figure_patient is not None:
        rows = rows[rows["patient"] == figure_patient]
        if rows.empty:
            raise InputError(f"the figure patient (figures.patient) has no result of the baseline {baseline!r} "
                             f"with a finite Dice and a warped image", patient=figure_patient,
                             path=results_dir / baseline / figure_patient)
        choice = "given by figures.patient"
    elif rows.empty:
        logger.info("qualitative panel skipped: no patient of %s has a finite Dice and a warped image", baseline)
        return written
    else:
        choice = ("the median mean Dice under the baseline among the patients with a result folder; "
                  "figures.patient picks one")
    row = rows.sort_values(["dice_mean", "patient"]).iloc[(len(rows) - 1) // 2]
    patient = row["patient"]
    initial = df[(df["variant"] == "initial") & (df["patient"] == patient)]
    before = ({"dice": initial["dice_mean"].iloc[0], "hd95": initial["hd95_mean"].iloc[0]}
              if not initial.empty else None)
    pair = shown_pair(results_dir, baseline, patient)
    path = figures.qualitative_panel(Path(pairs_dir) / pair, results_dir / baseline / pair,
                                     out_dir / "qualitative.png", before=before,
                                     after={"dice": row["dice_mean"], "hd95": row["hd95_mean"]},
                                     title=f"{baseline}, {pair}")
    written[path.name] = path
    sections.append(Section("Qualitative result", "figure", path,
                            f"One pair (n = 1) under the baseline {baseline}: {pair} ({choice}). Images in "
                            f"[0, 1]; differences are absolute intensity differences on one colour scale; contours "
                            f"{contour_legend(Path(pairs_dir) / pair)}. Title: mean Dice (unitless) and mean HD95 (mm) before → "
                            f"after" + (" (the patient's means over its slices)." if pair != patient else ".")))
    return written


def _default_alpha_family(df: pd.DataFrame) -> tuple[str, str] | None:
    combined = df[df["variant"] == "combined"].drop_duplicates("method")
    if combined.empty:
        return None
    counts = combined.groupby(["encoder", "distance"], sort=True)["alpha"].nunique()
    counts = counts[counts >= 2]
    if counts.empty:
        return None
    encoder, distance = counts.sort_values(ascending=False, kind="stable").index[0]
    return str(encoder), str(distance)


def _read_config(config: str | Path) -> dict[str, Any]:
    config = Path(config)
    if not config.is_file():
        raise ConfigError(f"config file {config} is missing")
    try:
        loaded = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {config} is not YAML: {exc}") from exc
    return loaded if isinstance(loaded, dict) else {}


def report_settings(config: str | Path) -> dict[str, Any]:
    """The report's settings, read from the experiment's config (the workflow's saved copy):
    ``baseline``, ``figure_patient`` (``figures.patient``) and ``alpha_family`` (``alpha_sweep``'s
    encoder and distance); keyword arguments of :func:`build_report`."""
    loaded = _read_config(config)
    if "baseline" not in loaded:
        raise ConfigError(f"config file {config} has no baseline")
    sweep = loaded.get("alpha_sweep")
    family = None
    if sweep:
        if not isinstance(sweep, dict) or not sweep.get("encoder") or not sweep.get("distance"):
            raise ConfigError(f"config file {config}: alpha_sweep needs an encoder and a distance")
        family = (sweep["encoder"], sweep["distance"])
    return {
        "baseline": loaded["baseline"],
        "figure_patient": (loaded.get("figures") or {}).get("patient"),
        "alpha_family": family,
    }


def _provenance(df: pd.DataFrame, config: str | Path | None, results_dir: str | Path | None) -> str:
    config_name = "not given"
    if config is not None:
        name = _read_config(config).get("name")
        config_name = f"{Path(config).name}" + (f" ({name})" if name else "")
    iterations = "not recorded"
    if "iterations" in df.columns:
        registered = df.loc[df["variant"] != "initial", "iterations"].dropna()
        iterations = ", ".join(f"{int(v)}" for v in sorted(registered.unique())) or "not recorded"
    devices = "not recorded (pass --results to read run.json)"
    if results_dir is not None:
        devices = ", ".join(_devices(df, Path(results_dir))) or "no run.json found"
    failed = int(df["status"].eq("failed").sum()) if "status" in df.columns else 0
    slices = len(df.drop_duplicates(["patient", "slice"])) if "slice" in df.columns else df["patient"].nunique()
    return (
        f"Config: {config_name}. Pairs: {df['patient'].nunique()} patients, {slices} slices (one pair per slice), "
        f"{df['method'].nunique()} methods (including the unregistered 'initial'), {len(df)} rows, {failed} failed. "
        f"Statistics, tests and the answer are at patient level: on each patient's mean over its slices "
        f"(a test over slices of one patient would be pseudo-replication), so n counts patients. "
        f"Iterations per registration: {iterations}. Device: {devices}.\n\n{CONVENTIONS}"
    )


def _devices(df: pd.DataFrame, results_dir: Path) -> list[str]:
    """The devices in the run.json of the registered rows of ``df`` (per slice where a patient has several), sorted."""
    registered = df.loc[df["variant"] != "initial"]
    slices = registered["slice"] if "slice" in registered.columns else pd.Series(None, index=registered.index)
    rows = [(m, p, None if pd.isna(s) else int(s)) for m, p, s in zip(registered["method"], registered["patient"], slices)]
    return devices(results_dir, list(dict.fromkeys(rows)))
