"""Tables from the metrics table: summary.csv, the paper-style Table 1, the reproduction table."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from featreg.errors import InputError
from featreg.evaluation.metrics import DEFINITIONS
from featreg.evaluation.metrics_table import DESCRIPTOR_COLUMNS, normalise_metrics, numeric_columns
from featreg.evaluation.statistics import describe, summarize
from featreg.reporting.cost import SECONDS_DEFINITION

PAPER_TABLE1 = Path(__file__).with_name("data") / "paper_table1.csv"
"""Kögl et al., MICCAI 2024, Table 1, as data (source in the file's comment lines and column)."""

TABLE1_METRICS = {"dice_mean": "DSC", "hd95_mean": "HD95 (mm)", "sdlogj": "sdlogJ", "neg_jac_pct": "%J≤0"}
TESTED_METRICS = {"dice_mean": "p DSC (Holm)", "hd95_mean": "p HD95 (Holm)"}
VARIANT_ORDER = {"initial": 0, "baseline": 1, "feature": 2, "combined": 3}
DISTANCE_LABELS = {"l1": "L1", "cosine": "Cos"}

METRIC_LABELS = {"dice": "DSC", "hd95": "HD95 (mm)", "sdlogj": "sdlogJ", "neg_jac_pct": "%J≤0"}

CONVENTIONS = (
    "Values are mean ± sample standard deviation (ddof = 1) over the pairs with a finite value: NaNs "
    "(failed pairs, HD95 with an empty mask) are excluded and n counts the finite values."
)


def metric_definitions() -> dict[str, str]:
    """One paragraph per metric (dice, hd95, sdlogj, neg_jac_pct), each starting with its label.

    The text is ``featreg.evaluation.metrics.DEFINITIONS``, so that captions say
    exactly what the metrics code computes.
    """
    return {k: f"{label}: {DEFINITIONS[k]}" for k, label in METRIC_LABELS.items()}


def method_descriptors(df: pd.DataFrame) -> pd.DataFrame:
    """One row per method (order of first appearance) with encoder, distance, variant, alpha."""
    _require(df, DESCRIPTOR_COLUMNS)
    return df.drop_duplicates("method")[list(DESCRIPTOR_COLUMNS)].reset_index(drop=True)


def summary_table(metrics_df: pd.DataFrame) -> pd.DataFrame:
    """summary.csv: per method its descriptors, pair count, failures, and n/mean/std of each metric column."""
    df = normalise_metrics(metrics_df)
    metrics = numeric_columns(df)
    desc = method_descriptors(df)
    counts = df.groupby("method", sort=False).agg(n_rows=("patient", "size"))
    if "status" in df.columns:
        counts["n_failed"] = df.assign(_f=df["status"].eq("failed")).groupby("method", sort=False)["_f"].sum()
    stats = summarize(df, metrics)
    return desc.merge(counts.reset_index(), on="method").merge(stats, on="method")


def ordered_methods(df: pd.DataFrame, baseline: str) -> list[str]:
    """Table 1 row order: initial, the baseline, other baselines, then per encoder its variants.

    Encoders keep their order of first appearance; within one: feature before
    combined, L1 before cosine, α ascending, then method name.
    """
    desc = method_descriptors(df)
    if baseline not in set(desc["method"]):
        raise InputError(f"baseline method {baseline!r} is not in the metrics table "
                         f"(methods: {', '.join(desc['method'])})")
    encoders = {e: i for i, e in enumerate(dict.fromkeys(desc["encoder"]))}
    dist_rank = {"l1": 0, "cosine": 1}

    def key(row: pd.Series) -> tuple:
        if row["variant"] == "initial":
            group = 0
        elif row["method"] == baseline:
            group = 1
        elif row["variant"] == "baseline" or not row["encoder"]:
            group = 2
        else:
            group = 3
        alpha = row["alpha"] if np.isfinite(row["alpha"]) else math.inf
        return (group, encoders[row["encoder"]] if group == 3 else 0, VARIANT_ORDER.get(row["variant"], 9),
                dist_rank.get(row["distance"], 9), alpha, row["method"])

    return [r["method"] for _, r in sorted(desc.iterrows(), key=lambda item: key(item[1]))]


def variant_label(variant: str, distance: str, alpha: float, image_loss: str = "NCC") -> str:
    """The paper's wording: initial, NCC, L1, Cos, Cos + NCC (α = 0.3)."""
    dist = DISTANCE_LABELS.get(distance, distance)
    if variant == "initial":
        return "initial"
    if variant == "baseline":
        return image_loss
    if variant == "feature":
        return dist
    if variant == "combined":
        return f"{dist} + {image_loss} (α = {alpha:g})" if np.isfinite(alpha) else f"{dist} + {image_loss}"
    return variant


def format_mean_std(values: Sequence[float] | np.ndarray, *, decimals: int = 3, n_expected: int | None = None) -> str:
    """``mean ± std`` of the finite values; "–" when none; its own n appended where it differs."""
    s = describe(values)
    if s.n == 0:
        return "–"
    std = f"{s.std:.{decimals}f}" if np.isfinite(s.std) else "–"
    text = f"{s.mean:.{decimals}f} ± {std}"
    return text if n_expected is None or s.n == n_expected else f"{text} (n = {s.n})"


def format_p(p: float) -> str:
    """p-values with three decimals, "<0.001" below, "–" when undefined."""
    if not np.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def table1_frame(metrics_df: pd.DataFrame, tests: pd.DataFrame, baseline: str = "ncc",
                 seconds: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 1 as a frame of formatted cells (see :func:`table1_markdown`).

    ``tests`` is ``featreg.reporting.comparisons.family_tests``: each row shows the
    Holm-corrected p of the comparison it is the method of (never one of the tuning
    family, which compares a method with itself), and names that comparison.
    ``seconds`` (``featreg.reporting.cost.pair_seconds``) adds the cost: seconds per
    pair (mean ± std over the pairs with a finished run) and the device(s) it ran on.
    """
    df = normalise_metrics(metrics_df)
    _require(df, [*DESCRIPTOR_COLUMNS, "patient", *TABLE1_METRICS])
    _require(tests, ["family", "metric", "method", "reference", "p_holm"])
    order = ordered_methods(df, baseline)
    compared = tests[~tests["family"].isin(OWN_REFERENCES)]  # each method against its own reference
    tested = compared.drop_duplicates("method").set_index("method")
    references = compared.drop_duplicates("reference").set_index("reference")["family"]
    p_holm = compared.set_index(["method", "metric"])["p_holm"]
    desc = method_descriptors(df).set_index("method")
    rows = []
    for method in order:
        d = desc.loc[method]
        values = df[df["method"] == method]
        n = describe(values["dice_mean"]).n
        row = {
            "Encoder": d["encoder"] or "no encoder",
            "Variant": variant_label(d["variant"], d["distance"], d["alpha"]),
            "Method": method,
        }
        for col, label in TABLE1_METRICS.items():
            row[label] = format_mean_std(values[col], n_expected=n)
        row["n"] = str(n)
        if seconds is not None:
            runs = seconds[seconds["method"] == method]
            row["s / pair"] = format_mean_std(runs["seconds"], decimals=2, n_expected=n)
            row["Device"] = ", ".join(sorted(set(runs["device"]))) or "–"
        if method in references.index:
            row["Tested against"] = f"reference ({FAMILY_TITLES[references[method]]})"
        elif method in tested.index:
            row["Tested against"] = f"{tested.loc[method, 'reference']} ({FAMILY_TITLES[tested.loc[method, 'family']]})"
        else:
            row["Tested against"] = "not tested"
        for metric, label in TESTED_METRICS.items():
            if method in references.index:
                row[label] = "ref."
            else:
                row[label] = format_p(p_holm.get((method, metric), np.nan))
        rows.append(row)
    return pd.DataFrame(rows)


FAMILY_TITLES = {"paper": "paper settings", "configured": "configured settings", "tuned": "tuned",
                 "tuning": "tuning effect", "encode": "encode once vs every iteration"}

OWN_REFERENCES = {"tuning": "each method untuned", "encode": "the same method encoding every iteration"}
"""The families whose methods each have a reference of their own, and how the report names that reference."""
"""Family keys of ``featreg.reporting.comparisons`` as Table 1 names them."""


def table1_header(metrics_df: pd.DataFrame, tests: pd.DataFrame, seconds: pd.DataFrame | None = None) -> str:
    """The paragraph above Table 1: definitions, units, n, the cost (with ``seconds``) and the tests."""
    df = normalise_metrics(metrics_df)
    defs = metric_definitions()
    n_patients = df["patient"].nunique()
    sizes = tests[~tests["family"].isin(OWN_REFERENCES)].groupby("family", sort=False)["method"].nunique()
    families = "; ".join(f"{FAMILY_TITLES[k]}: {n} method(s)" for k, n in sizes.items()) or "none"
    return (
        f"Table 1. Registration of {n_patients} pairs (fixed ED, moving ES), one row per method. {CONVENTIONS} "
        f"{defs['dice']} {defs['hd95']} {defs['sdlogj']} {defs['neg_jac_pct']} "
        + (f"s / pair: {SECONDS_DEFINITION}; mean ± std over the method's pairs with a finished run (n stated "
           f"where it differs from the row's n: one per slice, or failed runs left out); Device: the run.json "
           f"'device' of those pairs. " if seconds is not None else "")
        + f"p: paired two-sided Wilcoxon signed-rank test on the patients with a finite value for both methods, "
        f"against the reference named in 'Tested against', run at the same kind of settings (paper, configured "
        f"or tuned); each family is Holm-corrected on its own across its methods ({families}). 'ref.' marks a "
        f"family's reference; the unregistered initial pair is not tested ('–'). A tuned row is only ever "
        f"tested against the tuned baseline; the effect of tuning (X@tuned against X) is in the verdict and "
        f"statistics.csv."
    )


def table1_markdown(metrics_df: pd.DataFrame, tests: pd.DataFrame, baseline: str = "ncc",
                    seconds: pd.DataFrame | None = None) -> str:
    """Table 1 in the paper's layout as Markdown, preceded by its header paragraph.

    Rows: initial, baseline, then per encoder its variants; columns DSC,
    HD95 (mm), sdlogJ, %J≤0 (mean ± std), n, the comparison, and its
    Holm-corrected Wilcoxon p for DSC and HD95, and with ``seconds`` the seconds per
    pair and device (``tests``, ``seconds``: :func:`table1_frame`).
    """
    frame = table1_frame(metrics_df, tests, baseline, seconds)
    return table1_header(metrics_df, tests, seconds) + "\n\n" + to_markdown(frame) + "\n"


def read_paper_table(path: str | Path = PAPER_TABLE1) -> pd.DataFrame:
    """The paper's Table 1 rows (comment lines skipped, empty text cells as "")."""
    path = Path(path)
    if not path.is_file():
        raise InputError("paper table is missing", path=path)
    table = pd.read_csv(path, comment="#")
    for col in ("encoder", "distance", "variant", "paper_encoder", "paper_variant", "source"):
        table[col] = table[col].astype(object).where(table[col].notna(), "").astype(str)
    return table


def normalise_encoder(name: str) -> str:
    """Lower-case alphanumerics only: "DINOv2" and "dino_v2" → "dinov2"."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


REPRODUCTION_MAPPING = (
    "A featreg method maps to the paper's row with the same (encoder, distance, variant): encoder "
    "names are compared lower-case with non-alphanumerics removed (dinov2, sam, medsam; other encoders, "
    "e.g. LiteMedSAM, have no paper row), distance l1 → 'L1', cosine → 'Cos', variant feature → variant 1, "
    "combined → variant 2 ('+ NCC', any α), baseline → 'NCC', initial → 'initial'. Several featreg "
    "methods may map to one paper row (an α or λ grid); each is listed."
)

DEFINITION_DIFFERENCES = (
    ("HD95: featreg computes it over the label boundaries in mm, as the larger of the two directed 95th "
    "percentiles; one version of the paper's code computed it over all foreground pixels and in pixels "
    "(1 px = 1.8 mm after resampling), so the two columns are not on the same scale."),
    ("sdlogJ: featreg reports the standard deviation of log(clip(J, 1e-9)) on the raw Jacobian determinant "
    "J (and counts J ≤ 0 separately); the paper's code used std(log(J + |min J| + 1e-6)), which shifts every "
    "J by |min J| of the same field before the logarithm, so the value depends on its single most extreme "
    "pixel: the shift shrinks the spread when all J > 0 and inflates it (log 1e-6 at the minimum) when some "
    "J ≤ 0."),
    ("Dice: both are the per-class Dice of the warped moving labels against the fixed labels averaged over "
    "RV, Myo and LV; differences come from preprocessing, the transform and optimisation, not the definition."),
    ("std: featreg uses the sample standard deviation (ddof = 1); the paper does not say which it used."),
)


REPRODUCED = (("dice_mean", "dice", "DSC"), ("hd95_mean", "hd95", "HD95"), ("sdlogj", "sdlogj", "sdlogJ"))
"""(metrics.csv column, paper table prefix, label) of the columns the reproduction table compares."""


def reproduction_frame(metrics_df: pd.DataFrame, paper: pd.DataFrame,
                       settings: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The paper's rows beside featreg's numbers (mean ± std and featreg − paper differences of the means).

    ``settings`` ({method: label}, e.g. "paper settings" / "tuned: lam 60") restricts the
    featreg methods to those named (and the initial pair) and adds a Settings column.
    """
    df = normalise_metrics(metrics_df)
    desc = method_descriptors(df)
    if settings is not None:
        desc = desc[desc["method"].isin(settings) | (desc["variant"] == "initial")]
    desc = desc.assign(_enc=desc["encoder"].map(normalise_encoder))
    columns = ["Paper row", "featreg method", *(["Settings"] if settings is not None else []), "n"]
    for _, _, name in REPRODUCED:
        columns += [f"{name} paper", f"{name} featreg", f"Δ{name}"]
    rows = []
    for _, p in paper.iterrows():
        match = desc[(desc["_enc"] == normalise_encoder(p["encoder"])) & (desc["distance"] == p["distance"])
                     & (desc["variant"] == p["variant"])]
        base = {"Paper row": f"{p['paper_encoder']} / {p['paper_variant']}"}
        for _, prefix, name in REPRODUCED:
            mean, std = p[f"{prefix}_mean"], p[f"{prefix}_std"]
            base[f"{name} paper"] = f"{mean:.3f} ± {std:.3f}" if np.isfinite(mean) else "–"
        if match.empty:
            rows.append(base | {"featreg method": "not run"})
            continue
        for method in match["method"]:
            values = df[df["method"] == method]
            row = base | {"featreg method": method, "n": str(describe(values["dice_mean"]).n)}
            if settings is not None:
                row["Settings"] = settings.get(method, "–")
            for column, prefix, name in REPRODUCED:
                row[f"{name} featreg"] = format_mean_std(values[column])
                diff = describe(values[column]).mean - p[f"{prefix}_mean"]
                row[f"Δ{name}"] = f"{diff:+.3f}" if np.isfinite(diff) else "–"
            rows.append(row)
    return pd.DataFrame(rows).reindex(columns=columns).fillna("")


SETTINGS_NOTE = (
    "Settings: 'paper settings' rows run the paper's fixed λ, learning rate, iterations and lattice; "
    "'tuned' rows run the grid point their method's selection rule picked on the validation split "
    "(never on these test pairs), so every method, the baseline included, had the same tuning budget. "
    "The paper tuned 'empirically by maximizing the DSC' without naming a validation split."
)


def reproduction_caption(paper: pd.DataFrame, *, tuned: bool = False) -> str:
    """What the reproduction table shows: sources, conventions, the mapping, and each definition difference."""
    source = paper["source"].iloc[0] if len(paper) else "the paper"
    return (
        f"Reproduction of {source}. Paper values are as printed (mean ± std over their 30 test pairs); "
        f"featreg values: {CONVENTIONS} Δ = featreg mean − paper mean. featreg HD95 in mm. "
        f"{REPRODUCTION_MAPPING} " + (f"{SETTINGS_NOTE} " if tuned else "")
        + "Definition differences: " + " ".join(DEFINITION_DIFFERENCES)
    )


def reproduction_table(metrics_df: pd.DataFrame, paper_csv: str | Path = PAPER_TABLE1,
                       settings: Mapping[str, str] | None = None) -> str:
    """Markdown: the paper's Table 1 beside featreg's numbers, the mapping, and each definition difference.

    ``settings`` as in :func:`reproduction_frame` (the paper-settings and tuned rows of a tuning run).
    """
    paper = read_paper_table(paper_csv)
    frame = reproduction_frame(metrics_df, paper, settings)
    return f"{reproduction_caption(paper, tuned=settings is not None)}\n\n{to_markdown(frame)}\n"


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of ``frame``'s cells as text (pipes escaped)."""
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join(" --- " for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _require(df: pd.DataFrame, columns: Sequence[str] | Mapping[str, str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"metrics table lacks columns: {', '.join(missing)}")
