"""ACDC patient -> preprocessed 2D pair: in-plane resampling, crop around the heart, middle slice, [0, 1] intensities.

The choices follow the paper's pipeline (docs/references.md, "ACDC") except where
noted: resampling is in-plane only (the paper's code also interpolated across
5-10 mm slices).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
from scipy.ndimage import map_coordinates

from featreg.data import LABELS
from featreg.data.acdc import AcdcPatient
from featreg.data.pairs import Pair
from featreg.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

MIN_SIZE = 16
"""Smallest output side in pixels (as the config schema's ``preprocess.size`` minimum)."""


@dataclass(frozen=True)
class PreprocessOptions:
    """Every preprocessing choice; the defaults reproduce the paper's setup.

    - ``spacing_mm``: in-plane output spacing; images are resampled linearly,
      labels by nearest neighbour; the slice axis is never resampled.
    - ``size``: output slices are ``size`` x ``size``, cropped or zero-padded.
    - ``crop_reference``: the crop is centred on the in-plane bounding box of
      the ED label over the whole heart (``"heart"``, the paper's) or over the
      chosen slice only (``"slice"``). The same box is used for ED and ES, so
      the crop adds no motion.
    - ``clip_percentiles``: optional (low, high) percentiles of each cropped
      slice to clip to before min-max scaling to [0, 1] (``None``: plain min-max).
    - ``labels``: the label classes, name -> value (0 is background; ACDC's by
      default); label maps holding other values are refused, and the metrics
      follow these classes (they are kept in ``pair.json``).
    - ``slices``: which slices become pairs (:func:`chosen_slices`): ``"middle"``
      (the paper's: the middle of the ED heart's extent along the slice axis,
      ``(first + last) // 2`` of the slices holding any ED label), ``"all"``
      (every slice of that extent holding labels in both frames), or offsets
      from the middle (``(-1, 0, 1)``).
    """

    spacing_mm: float = 1.8
    size: int = 128
    crop_reference: Literal["heart", "slice"] = "heart"
    clip_percentiles: tuple[float, float] | None = None
    slices: Literal["middle", "all"] | tuple[int, ...] = "middle"
    labels: Mapping[str, int] = field(default_factory=lambda: {name: value for value, name in LABELS.items()})

    def __post_init__(self) -> None:
        if not self.spacing_mm > 0:
            raise ConfigError(f"spacing_mm must be > 0, got {self.spacing_mm}")
        if self.size < MIN_SIZE:
            raise ConfigError(f"size must be >= {MIN_SIZE}, got {self.size}")
        if self.crop_reference not in ("heart", "slice"):
            raise ConfigError(f"crop_reference must be 'heart' or 'slice', got {self.crop_reference!r}")
        if self.clip_percentiles is not None:
            low, high = self.clip_percentiles
            if not 0 <= low < high <= 100:
                raise ConfigError(f"clip_percentiles must satisfy 0 <= low < high <= 100, got {self.clip_percentiles}")
        if isinstance(self.slices, str):
            if self.slices not in ("middle", "all"):
                raise ConfigError(f"slices must be 'middle', 'all' or offsets from the middle, got {self.slices!r}")
        else:
            offsets = tuple(self.slices)
            if not offsets or not all(isinstance(k, int) and not isinstance(k, bool) for k in offsets):
                raise ConfigError(f"slice offsets must be a non-empty list of integers, got {self.slices!r}")
            if len(set(offsets)) != len(offsets):
                raise ConfigError(f"slice offsets repeat a value: {list(offsets)}")
            object.__setattr__(self, "slices", offsets)
        values = list(self.labels.values())
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 256 for v in values):
            raise ConfigError(f"labels must map class names to integers 1-255, got {dict(self.labels)}")
        if len(set(values)) != len(values):
            raise ConfigError(f"labels give two classes the same value: {dict(self.labels)}")

    @property
    def one_slice_per_patient(self) -> bool:
        """Whether a patient gives one pair (its folder is the pair) or several (one folder per slice)."""
        return self.slices == "middle"


def middle_slice(ed_label: np.ndarray) -> int:
    """Index of the middle of the ED heart's extent along the slice axis (axis 2)."""
    occupied = np.nonzero((ed_label > 0).any(axis=(0, 1)))[0]
    if occupied.size == 0:
        raise ValueError("the ED label map is empty")
    return int((occupied[0] + occupied[-1]) // 2)


def chosen_slices(ed_label: np.ndarray, es_label: np.ndarray, slices: str | Sequence[int]) -> list[int]:
    """Indices (axis 2) of the slices that become pairs, in order (:attr:`PreprocessOptions.slices`).

    ``"middle"``: :func:`middle_slice`; ``"all"``: every slice between the first and last
    holding ED labels that holds labels in both ED and ES; offsets: the middle plus each
    offset, which must lie inside the volume (ValueError otherwise).
    """
    middle = middle_slice(ed_label)
    if slices == "middle":
        return [middle]
    ed = (ed_label > 0).any(axis=(0, 1))
    if slices == "all":
        occupied = np.nonzero(ed)[0]
        both = ed & (es_label > 0).any(axis=(0, 1))
        return [int(k) for k in range(occupied[0], occupied[-1] + 1) if both[k]]
    outside = [k for k in slices if not 0 <= middle + k < ed_label.shape[2]]
    if outside:
        raise ValueError(f"slice offset(s) {outside} from the middle slice {middle} fall outside the {ed_label.shape[2]} slices")
    return [middle + k for k in slices]


def bounding_box_centre(mask: np.ndarray) -> tuple[float, float]:
    """Centre (index units) of the bounding box of a 2D mask: ((xmin + xmax) / 2, (ymin + ymax) / 2)."""
    xs = np.nonzero(mask.any(axis=1))[0]
    ys = np.nonzero(mask.any(axis=0))[0]
    if xs.size == 0:
        raise ValueError("the mask is empty")
    return float(xs[0] + xs[-1]) / 2.0, float(ys[0] + ys[-1]) / 2.0


def sample_grid(
    centre: tuple[float, float], spacing: Sequence[float], options: PreprocessOptions
) -> tuple[np.ndarray, np.ndarray]:
    """Source index coordinates (axis 0, axis 1) of the output pixel centres.

    Output pixel ``i`` lies at ``centre + (i - (size - 1) / 2) * spacing_mm / source spacing``,
    so the box centre falls between the two central output pixels.
    """
    offsets = np.arange(options.size) - (options.size - 1) / 2.0
    return (
        centre[0] + offsets * options.spacing_mm / spacing[0],
        centre[1] + offsets * options.spacing_mm / spacing[1],
    )


def resample_slice(
    slice2d: np.ndarray, grid: tuple[np.ndarray, np.ndarray], *, order: Literal[0, 1]
) -> np.ndarray:
    """Sample a 2D slice on the grid from :func:`sample_grid` (order 1 linear, 0 nearest); outside is 0."""
    gx, gy = np.meshgrid(grid[0], grid[1], indexing="ij")
    source = slice2d.astype(np.float32 if order else slice2d.dtype)
    return map_coordinates(source, [gx, gy], order=order, mode="constant", cval=0.0, prefilter=False)


def normalise(slice2d: np.ndarray, clip_percentiles: tuple[float, float] | None = None) -> np.ndarray:
    """Min-max scale to [0, 1] (float32), after optional clipping to the given percentiles."""
    values = slice2d.astype(np.float64)
    if clip_percentiles is not None:
        low, high = np.percentile(values, clip_percentiles)
        values = np.clip(values, low, high)
    lo, hi = values.min(), values.max()
    if not hi > lo:
        raise ValueError("the slice has constant intensity")
    return ((values - lo) / (hi - lo)).astype(np.float32)


def patient_slices(patient: AcdcPatient, options: PreprocessOptions = PreprocessOptions()) -> list[int]:
    """The slice indices of ``patient`` that become pairs under ``options`` (:func:`chosen_slices`)."""
    ed_path = patient.files.get("ed_label")
    if not (patient.ed_label > 0).any():
        raise InputError("the ED label map is empty", path=ed_path, patient=patient.patient)
    try:
        indices = chosen_slices(patient.ed_label, patient.es_label, options.slices)
    except ValueError as exc:
        raise InputError(str(exc), path=ed_path, patient=patient.patient) from None
    if not indices:
        raise InputError("no slice holds labels in both ED and ES", path=ed_path, patient=patient.patient)
    return indices


def preprocess_patient(
    patient: AcdcPatient, options: PreprocessOptions = PreprocessOptions(), index: int | None = None
) -> Pair:
    """The fixed (ED) / moving (ES) pair of ``patient`` on slice ``index`` (default: the middle slice).

    The crop, resampling and scaling are described in :class:`PreprocessOptions`.
    """
    ed_path = patient.files.get("ed_label")
    if not (patient.ed_label > 0).any():
        raise InputError("the ED label map is empty", path=ed_path, patient=patient.patient)
    index = middle_slice(patient.ed_label) if index is None else index
    ed_slice_label = patient.ed_label[:, :, index]
    if not (ed_slice_label > 0).any():
        raise InputError(f"the ED label is empty on the chosen slice {index}", path=ed_path, patient=patient.patient)
    reference = (patient.ed_label > 0).any(axis=2) if options.crop_reference == "heart" else ed_slice_label > 0
    centre = bounding_box_centre(reference)
    grid = sample_grid(centre, patient.spacing[:2], options)
    out = {}
    for phase in ("ed", "es"):
        image = resample_slice(getattr(patient, f"{phase}_image")[:, :, index], grid, order=1)
        try:
            out[f"{phase}_image"] = normalise(image, options.clip_percentiles)
        except ValueError as exc:
            raise InputError(
                f"{exc} after cropping slice {index}", path=patient.files.get(f"{phase}_image"), patient=patient.patient
            ) from None
        out[f"{phase}_label"] = resample_slice(getattr(patient, f"{phase}_label")[:, :, index], grid, order=0)
    if not (out["es_label"] > 0).any():
        logger.warning("%s: the ES label is empty on slice %d", patient.patient, index)
    provenance = {
        "source": {key: str(path) for key, path in patient.files.items()},
        "group": patient.group,
        "ed_frame": patient.ed_frame,
        "es_frame": patient.es_frame,
        "slice_index": index,
        "n_slices": int(patient.ed_label.shape[2]),
        "original_shape": list(patient.ed_image.shape),
        "original_spacing": list(patient.spacing),
        "original_dtype": str(patient.ed_image.dtype),
        "crop": {
            "centre_index": list(centre),
            "centre_mm": [centre[0] * patient.spacing[0], centre[1] * patient.spacing[1]],
            "first_index": [float(grid[0][0]), float(grid[1][0])],
            "last_index": [float(grid[0][-1]), float(grid[1][-1])],
        },
        "options": asdict(options),
    }
    return Pair(
        patient=patient.patient,
        fixed=out["ed_image"],
        moving=out["es_image"],
        fixed_label=out["ed_label"].astype(np.uint8),
        moving_label=out["es_label"].astype(np.uint8),
        spacing=(options.spacing_mm, options.spacing_mm),
        provenance=provenance,
    )
