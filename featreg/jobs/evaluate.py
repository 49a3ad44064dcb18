"""The evaluate job: the metrics table of a shard's pairs, before registration or after a method's."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from featreg.data import LABELS
from featreg.data.pairs import expand_pairs, pair_labels, pair_name, pair_patient, pair_slice
from featreg.errors import FeatregError, InputError
from featreg.evaluation.evaluate import evaluate_result, failed_row
from featreg.evaluation.metrics_table import INITIAL, descriptors, write_metrics
from featreg.experiment.methods import Method
from featreg.jobs.resume import unreadable_reason

log = logging.getLogger(__name__)


def evaluate_shard(
    pair_dirs: Sequence[str | Path],
    out_csv: str | Path,
    *,
    method: Method | None = None,
    results_dir: str | Path | None = None,
) -> Path:
    """Metrics of every pair of a shard, before registration (``method`` None) or after it.

    One row per pair (per slice of a patient with several). A pair or result that
    cannot be read gives that pair a ``failed`` row with the reason and NaN metrics;
    the other pairs are evaluated.
    """
    if (method is None) != (results_dir is None):
        raise FeatregError("give both a method and its results folder, or neither (the initial row)")
    columns = INITIAL if method is None else descriptors(method.name, method.encoder, method.distance,
                                                         method.variant, method.alpha)
    rows = []
    pairs = expand_pairs(pair_dirs)
    labels = next((pair_labels(p) for p in pairs if (p / "pair.json").is_file()), LABELS)  # for unreadable pairs
    for pair_dir in pairs:
        result_dir = None if results_dir is None else Path(results_dir) / pair_name(pair_dir)
        try:
            row = evaluate_result(pair_dir, result_dir)
        except InputError as exc:
            reason = unreadable_reason(pair_dir, exc)
            log.error("%s: %s", pair_name(pair_dir), reason)
            row = failed_row(pair_patient(pair_dir), reason, pair_slice(pair_dir), labels)
        rows.append(columns | row)
    return write_metrics(rows, out_csv)

