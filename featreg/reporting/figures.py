"""Figures as PNG files (matplotlib, Agg): each function takes data and an output path.

Images are drawn with array axis 0 horizontal and axis 1 vertical, origin at
the bottom left, for every panel alike.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from featreg.data.pairs import pair_labels
from featreg.data.nifti import read_displacement, read_nifti
from featreg.io import atomic_path
from featreg.errors import InputError
from featreg.evaluation.metrics import jacobian_determinant
from featreg.evaluation.statistics import pareto_mask, summarize
from featreg.reporting.tables import ordered_methods
from featreg.experiment.methods import ENCODE_SUFFIX
from featreg.evaluation.metrics_table import class_names, normalise_metrics

logger = logging.getLogger(__name__)

LABEL_COLOURS = ("tab:red", "tab:green", "tab:blue", "tab:orange", "tab:purple", "tab:cyan", "tab:pink", "tab:olive")
"""Contour colours of the label classes, in their order (ACDC's: RV red, Myo green, LV blue)."""


def label_colours(labels: Mapping[int, str]) -> dict[int, str]:
    """Label value -> contour colour, by class order (cycling after :data:`LABEL_COLOURS`)."""
    return {value: LABEL_COLOURS[k % len(LABEL_COLOURS)] for k, value in enumerate(labels)}
ENCODER_CMAPS = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys")


def dice_boxplot(metrics_df: pd.DataFrame, out_png: str | Path, *, baseline: str = "ncc",
                 methods: Sequence[str] | None = None) -> Path:
    """Box plots of Dice per class and mean, one box per method, grouped by class (paper Fig. 4).

    Methods with the same encoder share a colour map with varying hue.
    """
    df = normalise_metrics(metrics_df)
    order = ordered_methods(df, baseline)
    if methods is not None:
        order = [m for m in order if m in set(methods)]
    colours = _method_colours(df, order)
    classes = class_names(df)
    columns = [f"dice_{name}" for name in classes] + ["dice_mean"]
    titles = [*classes, "mean"]
    fig, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns), 4.2), sharey=True)
    for ax, column, title in zip(axes, columns, titles):
        data = [_finite(df.loc[df["method"] == m, column]) for m in order]
        box = ax.boxplot(data, patch_artist=True, widths=0.7, showfliers=True)
        for patch, method in zip(box["boxes"], order):
            patch.set_facecolor(colours[method])
        ax.set_title(title)
        ax.set_xticks([])
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("Dice (unitless)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[m]) for m in order]
    fig.legend(handles, order, loc="lower center", ncol=min(len(order), 4), fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.06 * (1 + (len(order) - 1) // 4), 1, 1))
    return save_figure(fig, out_png)


def alpha_curve(metrics_df: pd.DataFrame, out_png: str | Path, *, encoder: str, distance: str,
                baseline: str = "ncc") -> Path:
    """Dice and HD95 (mean ± std) against α for one encoder and distance (paper Fig. 8).

    α = 0 is the baseline method; the other points are that encoder's and
    distance's feature (α = 1) and combined methods.
    """
    df = normalise_metrics(metrics_df)
    curve = alpha_family(df, encoder=encoder, distance=distance, baseline=baseline)
    stats = summarize(df[df["method"].isin(curve["method"])], ["dice_mean", "hd95_mean"])
    curve = curve.merge(stats, on="method").sort_values("alpha")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, metric, label in zip(axes, ("dice_mean", "hd95_mean"), ("mean Dice (unitless)", "mean HD95 (mm)")):
        ax.errorbar(curve["alpha"], curve[f"mean_{metric}"], yerr=curve[f"std_{metric}"], marker="o", capsize=3)
        ax.set_xlabel("α (weight of the feature term)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    n = int(curve["n_dice_mean"].min())
    fig.suptitle(f"{encoder}, {distance}: mean ± std over n ≥ {n} pairs")
    fig.tight_layout()
    return save_figure(fig, out_png)


def alpha_family(df: pd.DataFrame, *, encoder: str, distance: str, baseline: str = "ncc") -> pd.DataFrame:
    """Methods (method, alpha) on one α curve: the baseline at α = 0 and the encoder+distance runs at the
    configured settings (a tuned or paper row, ``<method>@...``, and a grid row in the other encode mode,
    ``-once`` or ``-each``, share an α with the row they were made from and stay off the curve)."""
    df = normalise_metrics(df)
    desc = df.drop_duplicates("method")
    if baseline not in set(desc["method"]):
        raise InputError(f"baseline method {baseline!r} is not in the metrics table")
    runs = desc[(desc["encoder"] == encoder) & (desc["distance"] == distance)
                & desc["variant"].isin(["feature", "combined"]) & ~desc["method"].str.contains("@", regex=False)
                & ~desc["method"].str.endswith(tuple(ENCODE_SUFFIX.values()))]
    if runs.empty:
        raise InputError(f"no feature or combined methods with encoder {encoder!r} and distance {distance!r}")
    curve = pd.concat([desc[desc["method"] == baseline].assign(alpha=0.0), runs])[["method", "alpha"]]
    dup = curve["alpha"].duplicated(keep=False)
    if dup.any():
        raise InputError(f"several methods share an α on the {encoder}/{distance} curve: "
                         f"{', '.join(curve.loc[dup, 'method'])}; pass one method per α")
    return curve.reset_index(drop=True)


def jacobian_maps(results_dir: str | Path, methods: Sequence[str], patient: str, out_png: str | Path) -> Path:
    """Jacobian determinant maps of ``methods`` on one patient (paper Fig. 5).

    Diverging colour map centred on 1: red is shrinkage (J < 1), blue expansion.
    """
    if not methods:
        raise ValueError("jacobian_maps needs at least one method")
    maps = []
    for method in methods:
        u, spacing = read_displacement(Path(results_dir) / method / patient / "displacement.nii.gz", patient=patient)
        maps.append(jacobian_determinant(u, spacing))
    low = min(float(j.min()) for j in maps)
    high = max(float(j.max()) for j in maps)
    spread = max(1.0 - low, high - 1.0, 1e-3)
    norm = TwoSlopeNorm(vcenter=1.0, vmin=1.0 - spread, vmax=1.0 + spread)
    fig, axes = plt.subplots(1, len(maps), figsize=(3.4 * len(maps) + 0.8, 3.6), squeeze=False, layout="constrained")
    for ax, method, jac in zip(axes[0], methods, maps):
        image = _show(ax, jac, cmap="RdBu", norm=norm)
        ax.set_title(f"{method}\nJ in [{jac.min():.2f}, {jac.max():.2f}]", fontsize="small")
    fig.colorbar(image, ax=axes[0].tolist(), label="Jacobian determinant J (unitless)", shrink=0.85)
    fig.suptitle(f"{patient}")
    return save_figure(fig, out_png)


def qualitative_panel(pair_dir: str | Path, result_dir: str | Path, out_png: str | Path, *,
                      before: Mapping[str, float] | None = None, after: Mapping[str, float] | None = None,
                      title: str = "") -> Path:
    """Fixed, moving, warped, |fixed − moving| and |fixed − warped| with label contours (paper Fig. 7).

    ``before`` / ``after``: ``{"dice": ..., "hd95": ...}`` of the initial and
    registered pair, shown in the title.
    """
    pair_dir, result_dir = Path(pair_dir), Path(result_dir)
    patient = pair_dir.name
    colours = label_colours(pair_labels(pair_dir))
    fixed, _ = read_nifti(pair_dir / "fixed_image.nii.gz", patient=patient)
    moving, _ = read_nifti(pair_dir / "moving_image.nii.gz", patient=patient)
    fixed_label, _ = read_nifti(pair_dir / "fixed_label.nii.gz", patient=patient)
    moving_label, _ = read_nifti(pair_dir / "moving_label.nii.gz", patient=patient)
    warped, _ = read_nifti(result_dir / "warped_image.nii.gz", patient=patient)
    warped_label, _ = read_nifti(result_dir / "warped_label.nii.gz", patient=patient)
    fixed, moving, warped = (np.squeeze(a).astype(float) for a in (fixed, moving, warped))
    fixed_label, moving_label, warped_label = (np.squeeze(a) for a in (fixed_label, moving_label, warped_label))
    diff_max = max(float(np.abs(fixed - moving).max()), float(np.abs(fixed - warped).max()), 1e-6)
    panels = (
        ("fixed (ED)", fixed, fixed_label, "gray", (0, 1)),
        ("moving (ES)", moving, moving_label, "gray", (0, 1)),
        ("warped moving", warped, warped_label, "gray", (0, 1)),
        ("|fixed − moving|", np.abs(fixed - moving), None, "magma", (0, diff_max)),
        ("|fixed − warped|", np.abs(fixed - warped), None, "magma", (0, diff_max)),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.4))
    for ax, (name, image, label, cmap, (vmin, vmax)) in zip(axes, panels, strict=True):
        _show(ax, image, cmap=cmap, vmin=vmin, vmax=vmax)
        if label is not None:
            _contours(ax, label, colours)
            if label is not fixed_label:
                _contours(ax, fixed_label, colours, linestyles="dotted")
        ax.set_title(name, fontsize="small")
    text = title or patient
    if before and after:
        text += (f" — Dice {before['dice']:.3f} → {after['dice']:.3f}, "
                 f"HD95 {before['hd95']:.2f} → {after['hd95']:.2f} mm")
    fig.suptitle(text + "\n(solid: the image's labels; dotted: fixed labels)", fontsize="small")
    fig.tight_layout()
    return save_figure(fig, out_png)


def pareto_plot(metrics_df: pd.DataFrame, out_png: str | Path, *,
                family: Sequence[str] = ("variant", "encoder", "distance"), order_by: str | None = None) -> Path:
    """Mean Dice against mean sdlogJ and against mean %J≤0, one curve per method family.

    A family is the methods sharing ``family`` columns (its λ or α grid),
    joined in the order of ``order_by`` (a column such as ``lambda``) or of
    the x axis. Points on the Pareto front over all methods (maximise Dice,
    minimise the x metric) are ringed. The initial pair is left out.
    """
    df = normalise_metrics(metrics_df)
    df = df[df["variant"] != "initial"]
    metrics = ["dice_mean", "sdlogj", "neg_jac_pct"]
    stats = summarize(df, metrics)
    keys = list(family) + ([order_by] if order_by else [])
    stats = stats.merge(df.drop_duplicates("method")[["method", *keys]], on="method")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, x, xlabel in zip(axes, ("sdlogj", "neg_jac_pct"), ("mean sdlogJ (unitless)", "mean %J≤0 (% of pixels)")):
        for name, group in stats.groupby(list(family), sort=False):
            group = group.sort_values(order_by or f"mean_{x}")
            label = " / ".join(str(v) for v in name if v) if isinstance(name, tuple) else str(name)
            ax.plot(group[f"mean_{x}"], group["mean_dice_mean"], marker="o", label=label)
        front = pareto_mask(stats[["mean_dice_mean", f"mean_{x}"]].to_numpy(float), [True, False])
        ax.scatter(stats.loc[front, f"mean_{x}"], stats.loc[front, "mean_dice_mean"], s=160,
                   facecolors="none", edgecolors="black", label="Pareto front")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mean Dice (unitless)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize="small", loc="best")
    fig.tight_layout()
    return save_figure(fig, out_png)


def _method_colours(df: pd.DataFrame, order: Sequence[str]) -> dict[str, tuple]:
    desc = df.drop_duplicates("method").set_index("method")
    encoders = list(dict.fromkeys(desc.loc[list(order), "encoder"]))
    colours = {}
    for i, encoder in enumerate(encoders):
        members = [m for m in order if desc.loc[m, "encoder"] == encoder]
        cmap = plt.get_cmap(ENCODER_CMAPS[i % len(ENCODER_CMAPS)])
        for j, method in enumerate(members):
            colours[method] = cmap(0.35 + 0.55 * (j + 1) / (len(members) + 1))
    return colours


def _finite(values: pd.Series) -> np.ndarray:
    arr = pd.to_numeric(values, errors="coerce").to_numpy(float)
    return arr[np.isfinite(arr)]


def _show(ax: plt.Axes, image: np.ndarray, **kwargs: object) -> matplotlib.image.AxesImage:
    ax.set_xticks([])
    ax.set_yticks([])
    return ax.imshow(np.asarray(image).T, origin="lower", interpolation="nearest", **kwargs)


def _contours(ax: plt.Axes, label: np.ndarray, colours: Mapping[int, str], *, linestyles: str = "solid") -> None:
    for value, colour in colours.items():
        mask = (np.asarray(label) == value).T.astype(float)
        if mask.any():
            ax.contour(mask, levels=[0.5], colors=[colour], linewidths=0.8, linestyles=linestyles, origin="lower")


def save_figure(fig: plt.Figure, out_png: str | Path) -> Path:
    """Write ``fig`` as a PNG atomically and close it."""
    out_png = Path(out_png)
    try:
        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)
    logger.info("wrote %s", out_png)
    return out_png


DIRECTION_COLOURS = {1: "tab:green", -1: "tab:red", 0: "0.45"}
"""Forest-plot colour of a better, worse and not significantly different row."""


def forest_plot(panels: Sequence[tuple[str, pd.DataFrame]], out_png: str | Path) -> Path:
    """One forest plot per metric, side by side: Δ against the reference with its CI, one row per method.

    ``panels`` are (x label, rows) with the rows of
    ``featreg.reporting.comparisons.forest_rows``, drawn in their order from the top
    (best first). The bar is the CI; a filled marker is a significant row (green
    better, red worse), an open one is not; the dashed line is Δ = 0, the reference.
    """
    if not panels:
        raise ValueError("forest_plot needs at least one panel")
    n_rows = max(len(rows) for _, rows in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 0.9 + 0.22 * n_rows), squeeze=False)
    for ax, (xlabel, rows) in zip(axes[0], panels):
        y = np.arange(len(rows))[::-1]
        for yi, (_, row) in zip(y, rows.iterrows()):
            colour = DIRECTION_COLOURS[row["direction"]]
            if np.isfinite(row["ci_low"]):
                ax.plot([row["ci_low"], row["ci_high"]], [yi, yi], color=colour, lw=1.6)
            ax.plot(row["mean_diff"], yi, "o", ms=5, color=colour,
                    markerfacecolor=colour if row["significant"] else "white")
        ax.axvline(0, color="black", ls="--", lw=0.8)
        ax.set_yticks(y, rows["method"], fontsize="small")
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_xlabel(textwrap.fill(xlabel, 40), fontsize="small")  # labels against a named reference are long
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.tick_params(axis="x", labelsize="small")
        ax.grid(axis="x", alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", color=DIRECTION_COLOURS[d], markerfacecolor=face, label=label)
               for d, face, label in ((1, DIRECTION_COLOURS[1], "better (Holm p < 0.05)"),
                                      (-1, DIRECTION_COLOURS[-1], "worse (Holm p < 0.05)"),
                                      (0, "white", "not significant"))]
    fig.legend(handles=handles, loc="upper center", ncol=3, fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    return save_figure(fig, out_png)


def cost_plot(points: pd.DataFrame, out_png: str | Path) -> Path:
    """Mean Dice against mean seconds per pair (log x), one labelled point per method, Pareto front marked.

    ``points`` has ``method``, ``seconds`` and ``dice`` (the means). The front (maximise
    Dice, minimise seconds) is ringed and joined by a step line.
    """
    points = points.dropna(subset=["seconds", "dice"])
    points = points[points["seconds"] > 0]
    if points.empty:
        raise InputError("no method has both a mean Dice and a positive mean seconds per pair")
    front = pareto_mask(points[["dice", "seconds"]].to_numpy(float), [True, False])
    fig, ax = plt.subplots(figsize=(8.0, 5.0))
    ax.scatter(points["seconds"], points["dice"], s=22, color="tab:blue", zorder=3)
    line = points[front].sort_values("seconds")
    ax.step(line["seconds"], line["dice"], where="post", color="black", lw=0.8, zorder=2)
    ax.scatter(line["seconds"], line["dice"], s=120, facecolors="none", edgecolors="black", zorder=4,
               label="Pareto front (higher Dice, fewer seconds)")
    for _, row in points.iterrows():
        ax.annotate(row["method"], (row["seconds"], row["dice"]), xytext=(4, 3), textcoords="offset points",
                    fontsize=6.5)
    ax.set_xscale("log")
    narrow = points["seconds"].max() <= 100 * points["seconds"].min()
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if narrow else (1.0,)))  # 1-2-5 steps within two decades
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("mean seconds per pair (log scale)")
    ax.set_ylabel("mean Dice (unitless)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    return save_figure(fig, out_png)
