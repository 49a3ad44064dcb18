"""Overlap, boundary and field-regularity metrics of one registered 2D pair.

Arrays follow docs/design.md: a slice is ``(X, Y)``, its spacing ``(sx, sy)``
in mm, labels 0 background and the configured classes (value -> name; ACDC's
1 RV / 2 Myo / 3 LV by default, :data:`featreg.data.LABELS`), a displacement ``(2, X, Y)``
in mm mapping a fixed point x to x + u(x) in the moving image.

Definitions differ between libraries (docs/references.md, "Metrics"); the ones used here
are spelled out in each docstring and in :data:`DEFINITIONS`, which the
report quotes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from featreg.data import LABELS

DEFINITIONS: dict[str, str] = {
    "dice": (
        "Dice overlap 2|P∩R| / (|P| + |R|) of the warped moving label P and the fixed label R, "
        "per label class (dice_<class>; unitless, 0 to 1). A class present in only one "
        "of the two scores 0; a class absent from both is undefined (NaN) and listed in "
        "hd95_empty. dice_mean is the mean over the classes with a defined Dice."
    ),
    "hd95": (
        "95th-percentile symmetric Hausdorff distance in mm between class boundaries "
        "(hd95_<class>). A boundary pixel is a mask pixel with a 4-connected "
        "neighbour outside the mask (pixels outside the image count as outside). For each "
        "boundary pixel of one mask, the Euclidean distance in mm (anisotropic spacing) to the "
        "nearest boundary pixel of the other; the 95th percentile (linear interpolation) is "
        "taken of each of the two directed sets and HD95 is the larger of the two, as MONAI's "
        "compute_hausdorff_distance(percentile=95, directed=False) and DeepMind's "
        "surface-distance do (medpy instead pools both sets). A class empty in the prediction "
        "or the reference has no HD95 (NaN) and is listed in hd95_empty; hd95_mean is the mean "
        "over the classes with a finite HD95."
    ),
    "sdlogj": (
        "Standard deviation (population, ddof 0) of log(max(J, 1e-9)), where J is the "
        "determinant of the Jacobian of x ↦ x + u(x) computed from the dense displacement in "
        "mm by central differences (one-sided at the image border). Taken on the raw J, without "
        "Learn2Reg's +3 shift; over the whole field (sdlogj) and over the fixed heart mask, "
        "fixed label > 0 (sdlogj_heart). Unitless; 0 for a rigid translation."
    ),
    "neg_jac_pct": (
        "Percentage of pixels whose Jacobian determinant J (as for sdlogj) is ≤ 0, i.e. where "
        "the transform folds; over the whole field (neg_jac_pct) and over the fixed heart mask "
        "(neg_jac_pct_heart). In percent of pixels."
    ),
}

def metric_columns(labels: Mapping[int, str] = LABELS) -> tuple[str, ...]:
    """The metric columns of metrics.csv for label classes ``labels`` (docs/design.md, "The metrics table"), in order."""
    return (
        *(f"dice_{name}" for name in labels.values()),
        "dice_mean",
        *(f"hd95_{name}" for name in labels.values()),
        "hd95_mean",
        "hd95_empty",
        "sdlogj",
        "neg_jac_pct",
        "sdlogj_heart",
        "neg_jac_pct_heart",
    )


METRIC_COLUMNS: tuple[str, ...] = metric_columns()
"""The metric columns with ACDC's classes (RV, Myo, LV)."""

JACOBIAN_CLIP = 1e-9
"""Lower clip of J before the logarithm in :func:`sdlogj`."""


def _check_masks(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.dtype != bool or ref.dtype != bool:
        raise ValueError(f"pred and ref must be boolean masks, got dtypes {pred.dtype} and {ref.dtype}")
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref must have the same shape, got {pred.shape} and {ref.shape}")
    return pred, ref


def _check_labels(pred_labels: np.ndarray, ref_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred_labels, ref_labels = np.asarray(pred_labels), np.asarray(ref_labels)
    if pred_labels.shape != ref_labels.shape or pred_labels.ndim != 2:
        raise ValueError(f"label maps must be 2D of the same shape, got {pred_labels.shape} and {ref_labels.shape}")
    return pred_labels, ref_labels


def _check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != ndim or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be {ndim} positive finite values in mm, got {spacing}")
    return spacing


def _finite_mean(values: Sequence[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice overlap 2|P∩R| / (|P| + |R|) of two boolean masks.

    0 when exactly one mask is empty; NaN when both are (undefined, not perfect:
    the caller flags it).
    """
    pred, ref = _check_masks(pred, ref)
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total


def dice_per_class(
    pred_labels: np.ndarray, ref_labels: np.ndarray, labels: Mapping[int, str] = LABELS
) -> dict[str, float]:
    """Dice of each class of ``labels`` (value -> name) and their mean.

    Keys the class names and ``mean``; ``mean`` averages the classes whose Dice is
    defined (not NaN), and is NaN when none is.
    """
    pred_labels, ref_labels = _check_labels(pred_labels, ref_labels)
    scores = {name: dice(pred_labels == value, ref_labels == value) for value, name in labels.items()}
    scores["mean"] = _finite_mean(list(scores.values()))
    return scores


def boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a boolean mask: those with a 4-connected neighbour outside it.

    The mask minus its binary erosion by the cross, with the outside of the
    image counted as background, as MONAI's ``get_mask_edges`` does.
    """
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _directed_distances(source: np.ndarray, target: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Distance in mm from each pixel of ``source`` to the nearest pixel of ``target``."""
    return ndimage.distance_transform_edt(~target, sampling=spacing)[source]


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance in mm between two boolean masks.

    The larger of the two directed 95th percentiles (linear interpolation) of
    the boundary-to-nearest-boundary Euclidean distances in mm, with
    anisotropic ``spacing`` (one value per axis). Equals MONAI's
    ``compute_hausdorff_distance(percentile=95, directed=False, spacing=...)``
    up to MONAI's float32 rounding. NaN when either mask is empty.
    """
    pred, ref = _check_masks(pred, ref)
    spacing = _check_spacing(spacing, pred.ndim)
    if not pred.any() or not ref.any():
        return float("nan")
    edges_pred, edges_ref = boundary(pred), boundary(ref)
    forward = _directed_distances(edges_pred, edges_ref, spacing)
    backward = _directed_distances(edges_ref, edges_pred, spacing)
    return float(max(np.percentile(forward, 95), np.percentile(backward, 95)))


def hd95_per_class(
    pred_labels: np.ndarray, ref_labels: np.ndarray, spacing: Sequence[float], labels: Mapping[int, str] = LABELS
) -> tuple[dict[str, float], list[str]]:
    """HD95 in mm of each class of ``labels`` (value -> name) and their mean.

    Returns ``({<class>..., mean}, empty_classes)``: a class empty in the
    prediction or the reference has HD95 NaN and its name is listed in
    ``empty_classes``; ``mean`` averages the finite classes (NaN if none).
    """
    pred_labels, ref_labels = _check_labels(pred_labels, ref_labels)
    distances: dict[str, float] = {}
    empty: list[str] = []
    for value, name in labels.items():
        pred, ref = pred_labels == value, ref_labels == value
        if not pred.any() or not ref.any():
            empty.append(name)
        distances[name] = hd95(pred, ref, spacing)
    distances["mean"] = _finite_mean(list(distances.values()))
    return distances, empty


def jacobian_determinant(displacement_mm: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Determinant of the Jacobian of x ↦ x + u(x), shape ``(X, Y)``.

    ``displacement_mm`` is ``(2, X, Y)`` in mm, component i along array axis i;
    ``spacing`` is ``(sx, sy)`` in mm. Derivatives are ``np.gradient`` with the
    spacing: central differences inside, first-order one-sided differences on
    the outermost rows and columns (so every pixel gets a value; a linear
    field is differentiated exactly everywhere).
    """
    u = np.asarray(displacement_mm, dtype=np.float64)
    if u.ndim != 3 or u.shape[0] != 2 or min(u.shape[1:]) < 2:
        raise ValueError(f"displacement_mm must have shape (2, X, Y) with X, Y >= 2, got {u.shape}")
    spacing = _check_spacing(spacing, 2)
    (d00, d01), (d10, d11) = (np.gradient(u[i], *spacing) for i in range(2))
    return (1.0 + d00) * (1.0 + d11) - d01 * d10


def _select(jac: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    jac = np.asarray(jac, dtype=np.float64)
    if mask is None:
        return jac.ravel()
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != jac.shape:
        raise ValueError(f"mask must be boolean with the shape of jac {jac.shape}, got {mask.dtype} {mask.shape}")
    return jac[mask]


def sdlogj(jac: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Standard deviation (ddof 0) of log(max(J, 1e-9)) over ``mask`` (default: all pixels).

    On the raw J, not Learn2Reg's J + 3. NaN when the mask is empty.
    """
    values = _select(jac, mask)
    if values.size == 0:
        return float("nan")
    return float(np.std(np.log(np.maximum(values, JACOBIAN_CLIP))))


def neg_jac_pct(jac: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Percentage of pixels in ``mask`` (default: all) with J ≤ 0. NaN when the mask is empty."""
    values = _select(jac, mask)
    if values.size == 0:
        return float("nan")
    return 100.0 * float(np.count_nonzero(values <= 0)) / values.size


def evaluate_arrays(
    fixed_label: np.ndarray,
    warped_label: np.ndarray,
    displacement_mm: np.ndarray,
    spacing: Sequence[float],
    labels: Mapping[int, str] = LABELS,
) -> dict[str, float | str]:
    """The metric columns of one pair (:func:`metric_columns` of ``labels``, in order).

    ``warped_label`` is the moving label warped onto the fixed grid (the
    prediction), ``fixed_label`` the reference; the field metrics use the
    whole field and the fixed heart mask (``fixed_label > 0``). The
    unregistered ("initial") row is this with the moving label and a zero
    field. ``hd95_empty`` joins with ";" the classes empty in either label.
    """
    fixed_label, warped_label = _check_labels(fixed_label, warped_label)
    displacement_mm = np.asarray(displacement_mm)
    if displacement_mm.shape != (2, *fixed_label.shape):
        raise ValueError(
            f"displacement_mm must have shape {(2, *fixed_label.shape)} to match the labels, got {displacement_mm.shape}"
        )
    dices = dice_per_class(warped_label, fixed_label, labels)
    distances, empty = hd95_per_class(warped_label, fixed_label, spacing, labels)
    jac = jacobian_determinant(displacement_mm, spacing)
    heart = fixed_label > 0
    row: dict[str, float | str] = {f"dice_{name}": value for name, value in dices.items()}
    row.update({f"hd95_{name}": value for name, value in distances.items()})
    row["hd95_empty"] = ";".join(empty)
    row["sdlogj"] = sdlogj(jac)
    row["neg_jac_pct"] = neg_jac_pct(jac)
    row["sdlogj_heart"] = sdlogj(jac, heart)
    row["neg_jac_pct_heart"] = neg_jac_pct(jac, heart)
    return row
