"""Evaluation: per-pair metrics (metrics.py), metrics rows from files (evaluate.py), statistics."""

from featreg.evaluation.evaluate import evaluate_result
from featreg.evaluation.metrics_table import ROW_COLUMNS
from featreg.evaluation.metrics import (
    DEFINITIONS,
    METRIC_COLUMNS,
    dice,
    dice_per_class,
    evaluate_arrays,
    hd95,
    hd95_per_class,
    jacobian_determinant,
    neg_jac_pct,
    sdlogj,
)

__all__ = [
    "DEFINITIONS",
    "METRIC_COLUMNS",
    "ROW_COLUMNS",
    "dice",
    "dice_per_class",
    "evaluate_arrays",
    "evaluate_result",
    "hd95",
    "hd95_per_class",
    "jacobian_determinant",
    "neg_jac_pct",
    "sdlogj",
]
