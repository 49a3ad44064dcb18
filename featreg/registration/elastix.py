"""elastix B-spline registration (itk-elastix) with featreg's outputs and conventions.

The field's standard tool as a method beside featreg's PyTorch FFD. The settings
(:class:`ElastixSettings`) are checked on construction and mapped onto elastix
parameter maps in one place (:func:`parameter_maps`); :func:`register_elastix`
registers one pair and returns the displacement in featreg's convention.

Conventions. ``itk.image_from_array`` reads a numpy ``(X, Y)`` array with the axes
reversed: ITK's first axis is numpy's last. Spacing and the deformation field's
components are therefore reversed on the way in and out. elastix's transform maps a
fixed-image point p (physical, mm) to ``p + d(p)`` in the moving image and its result
image is ``M(p + d(p))``, so ``d`` with its components reversed is featreg's
displacement in mm (component c along array axis c, warped = M(x + u(x))).
Both images get origin 0 and the pair's spacing, so physical points and pixel
indices differ by the spacing only. Tested against featreg's own sampler.

``itk`` is imported inside the functions that need it (it takes seconds to load),
so the workflow can check settings at parse time without it.
"""

from __future__ import annotations

import dataclasses
import resource
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import numpy as np

from featreg.errors import ConfigError

METRICS = ("AdvancedNormalizedCorrelation", "AdvancedMeanSquares", "AdvancedMattesMutualInformation")
"""elastix image metrics a method may use; NCC is the one comparable with featreg's baseline."""

SAMPLERS = {"random": "RandomCoordinate", "full": "Full"}
"""featreg's sampler names -> elastix ImageSampler: random off-grid samples, or every pixel."""

DEFAULT_GRID_SPACING_MM = 127 / 21 * 1.8
"""featreg's default control-point spacing in mm: a 24×24 cubic lattice on 128 px spans
127 px with 21 intervals (one extra point beyond each end), at 1.8 mm per pixel (≈ 10.89 mm)."""


@dataclass(frozen=True)
class ElastixSettings:
    """One elastix B-spline method; checked on construction.

    ``metric`` is the image similarity; ``bending_weight`` > 0 adds elastix's
    ``TransformBendingEnergyPenalty`` with that weight (the metric's weight is 1).
    ``grid_spacing_mm`` is the final control-point spacing; each of the
    ``resolutions`` pyramid levels (coarse to fine) doubles it and runs
    ``iterations`` optimiser steps on ``spatial_samples`` pixels drawn anew every
    step (``sampler`` random) or on every pixel (``sampler`` full). ``seed`` fixes
    elastix's random sampler, so a pair's result is reproducible.
    """

    metric: str = "AdvancedNormalizedCorrelation"
    bending_weight: float = 0.0
    grid_spacing_mm: float = DEFAULT_GRID_SPACING_MM
    resolutions: int = 3
    iterations: int = 250
    spatial_samples: int = 2048
    sampler: str = "random"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"elastix metric must be one of {list(METRICS)}, got {self.metric!r}")
        if not _is_number(self.bending_weight) or not self.bending_weight >= 0:
            raise ConfigError(f"elastix bending_weight must be a number >= 0, got {self.bending_weight!r}")
        if not _is_number(self.grid_spacing_mm) or not self.grid_spacing_mm > 0:
            raise ConfigError(f"elastix grid_spacing_mm must be a number > 0, got {self.grid_spacing_mm!r}")
        for key in ("resolutions", "iterations", "spatial_samples"):
            value = getattr(self, key)
            if not _is_int(value) or value < 1:
                raise ConfigError(f"elastix {key} must be an integer >= 1, got {value!r}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"elastix sampler must be one of {list(SAMPLERS)}, got {self.sampler!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"elastix seed must be an integer >= 0, got {self.seed!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ElastixSettings:
        """Build from a mapping (a method's ``settings``); unknown keys are an error."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown elastix setting(s): {', '.join(unknown)}; known: {', '.join(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def total_iterations(self) -> int:
        """Optimiser steps over all resolutions (the ``iterations`` column of metrics.csv)."""
        return self.resolutions * self.iterations


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parameter_maps(settings: ElastixSettings) -> list[dict[str, list[str]]]:
    """The elastix parameter maps of ``settings``: the one place featreg's settings meet elastix's.

    One B-spline map (elastix runs a list of maps in sequence; featreg's pairs are
    already centred on the heart, so there is no affine stage):

    - ``Transform BSplineTransform`` (cubic) with ``FinalGridSpacingInPhysicalUnits``
      = ``grid_spacing_mm``; ``GridSpacingSchedule`` 2^(R-1) … 2 1, so each coarser
      level of the ``R`` = ``resolutions`` smoothing pyramids has twice the spacing.
    - ``Metric``: ``metric`` alone (``MultiResolutionRegistration``), or with
      ``TransformBendingEnergyPenalty`` weighted ``bending_weight`` against 1
      (``MultiMetricMultiResolutionRegistration``).
    - ``Optimizer AdaptiveStochasticGradientDescent`` (elastix's default for
      B-splines; step sizes estimated automatically), ``MaximumNumberOfIterations``
      = ``iterations`` per resolution.
    - ``ImageSampler`` RandomCoordinate (``NumberOfSpatialSamples`` =
      ``spatial_samples``, new samples every iteration) or Full; ``RandomSeed`` = ``seed``.
    - Linear interpolation while optimising and for elastix's own result image
      (``FinalLinearInterpolator``), as featreg's bilinear sampler, so the two can be
      compared; outside the moving image elastix writes 0 (``DefaultPixelValue``).
    """
    levels = settings.resolutions
    bspline: dict[str, list[str]] = {
        "Registration": ["MultiResolutionRegistration"],
        "Transform": ["BSplineTransform"],
        "BSplineTransformSplineOrder": ["3"],
        "FinalGridSpacingInPhysicalUnits": [repr(float(settings.grid_spacing_mm))],
        "GridSpacingSchedule": [str(2 ** (levels - 1 - level)) for level in range(levels)],
        "NumberOfResolutions": [str(levels)],
        "FixedImagePyramid": ["FixedSmoothingImagePyramid"],
        "MovingImagePyramid": ["MovingSmoothingImagePyramid"],
        "Metric": [settings.metric],
        "Optimizer": ["AdaptiveStochasticGradientDescent"],
        "AutomaticParameterEstimation": ["true"],
        "MaximumNumberOfIterations": [str(settings.iterations)],
        "ImageSampler": [SAMPLERS[settings.sampler]],
        "NumberOfSpatialSamples": [str(settings.spatial_samples)],
        "NewSamplesEveryIteration": ["true"],
        "RandomSeed": [str(settings.seed)],
        "Interpolator": ["LinearInterpolator"],
        "ResampleInterpolator": ["FinalLinearInterpolator"],
        "Resampler": ["DefaultResampler"],
        "DefaultPixelValue": ["0"],
        "WriteResultImage": ["true"],
    }
    if settings.bending_weight > 0:
        bspline |= {
            "Registration": ["MultiMetricMultiResolutionRegistration"],
            "Metric": [settings.metric, "TransformBendingEnergyPenalty"],
            "Metric0Weight": ["1"],
            "Metric1Weight": [repr(float(settings.bending_weight))],
        }
    return [bspline]


@dataclass(frozen=True)
class ElastixResult:
    """One registered pair: ``displacement_mm (2, X, Y)`` in featreg's convention, elastix's own
    result image ``warped (X, Y)`` (0 where x + u(x) leaves the moving image), wall seconds,
    the process's peak RSS so far, the parameter maps and elastix's version."""

    displacement_mm: np.ndarray
    warped: np.ndarray
    seconds: float
    peak_memory_mb: float
    parameter_maps: list[dict[str, list[str]]]
    engine: str


def to_itk_image(array: np.ndarray, spacing: Sequence[float]) -> Any:
    """A float32 ITK image of a numpy ``(X, Y)`` array: axes and spacing reversed, origin 0."""
    import itk

    image = itk.image_from_array(np.ascontiguousarray(array, dtype=np.float32))
    image.SetSpacing([float(s) for s in reversed(spacing)])
    image.SetOrigin([0.0, 0.0])
    return image


def register_elastix(fixed: np.ndarray, moving: np.ndarray, spacing: Sequence[float], settings: ElastixSettings,
                     *, threads: int = 1) -> ElastixResult:
    """Register one ``(X, Y)`` pair with elastix; ``spacing`` in mm along the array axes.

    ``threads`` is set through ITK's global thread limits: the per-object
    ``SetNumberOfThreads`` crashes multi-metric registrations (ITKElastix issue #160).
    """
    import itk

    fixed, moving = np.asarray(fixed), np.asarray(moving)
    if fixed.ndim != 2 or fixed.shape != moving.shape:
        raise ValueError(f"fixed and moving must be 2D arrays of one shape, got {fixed.shape} and {moving.shape}")
    if len(spacing) != 2 or not all(s > 0 for s in spacing):
        raise ValueError(f"spacing must be two positive numbers (mm), got {spacing!r}")
    if not _is_int(threads) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    itk.MultiThreaderBase.SetGlobalMaximumNumberOfThreads(threads)
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(threads)
    maps = parameter_maps(settings)
    parameters = itk.ParameterObject.New()
    for values in maps:
        parameters.AddParameterMap({key: tuple(value) for key, value in values.items()})
    moving_image = to_itk_image(moving, spacing)
    start = time.perf_counter()
    method = itk.ElastixRegistrationMethod.New(to_itk_image(fixed, spacing), moving_image)
    method.SetParameterObject(parameters)
    method.SetLogToConsole(False)
    method.UpdateLargestPossibleRegion()
    transformix = itk.TransformixFilter.New(moving_image)
    transformix.SetTransformParameterObject(method.GetTransformParameterObject())
    transformix.SetComputeDeformationField(True)
    transformix.SetLogToConsole(False)
    with tempfile.TemporaryDirectory(prefix="featreg-transformix-") as scratch:
        transformix.SetOutputDirectory(scratch)  # it also writes the field as a file, by default into the cwd
        transformix.UpdateLargestPossibleRegion()
    field = transformix.GetOutputDeformationField()
    seconds = time.perf_counter() - start
    itk_field = itk.array_from_image(field)  # (X, Y, 2), component 0 along ITK's first axis = numpy's last
    displacement_mm = np.ascontiguousarray(np.moveaxis(itk_field[..., ::-1], -1, 0), dtype=np.float32)
    warped = itk.array_from_image(method.GetOutput()).astype(np.float32)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return ElastixResult(displacement_mm=displacement_mm, warped=warped, seconds=seconds,
                         peak_memory_mb=rss / 2**20 if sys.platform == "darwin" else rss / 2**10,
                         parameter_maps=maps, engine=f"itk-elastix {version('itk-elastix')}")
