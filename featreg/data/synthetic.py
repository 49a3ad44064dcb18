"""Synthetic cardiac cine MRI cohort in the ACDC layout, with ACDC's header quirks.

Each patient is a short-axis stack at ED and ES: LV blood pool, myocardium and
RV whose sizes follow ACDC's per-group volumes and ejection fractions
(docs/references.md, "ACDC"), an apex-base taper and mass-conserving wall
thickening. What makes real cine MRI hard to register is drawn too:

- through-plane motion: the apex stays and the base descends 10-15 mm toward
  it at ES (less in a weak heart), so a slice index cuts another level;
- trabeculae and papillary muscles in the LV cavity, labelled LV as in ACDC,
  which fill more of the cavity at ES (the image's dark wall is not the label);
- an irregular, patient-specific RV with trabeculae and a moderator band, and
  shapes that change and twist from apex to base;
- flow: blood brightness changes between frames, overall and in patches;
- partial volume: each slice averages three cuts through its slab (apex, base,
  atrium above the base);
- irregular surroundings (body wall, patchy fat, lungs with vessels, liver,
  aorta, spine), a multiplicative bias field and Rician noise;
- annotation: each frame's slices are contoured on their own, as ACDC's
  experts did, so label outlines wander about a millimetre from the image's
  edges, differently at ED and ES (only the labels move, never the image).

Patient ``k`` depends only on ``(seed, k)``, so growing a cohort never changes
the patients already written.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import binary_dilation, gaussian_filter, map_coordinates
from tqdm import tqdm

from featreg.data.acdc import patient_id, subset_of
from featreg.io import atomic_path

logger = logging.getLogger(__name__)

GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")
"""ACDC's pathology groups; patient ``k`` gets ``GROUPS[(k - 1) % 5]`` so any run of five is balanced."""

# Per group: LV end-diastolic volume (mL), LV ejection fraction, ED cavity radius
# at the base (mm), ED wall thickness (mm), RV end-diastolic volume (mL) and RV
# ejection fraction. Medians from ACDC (docs/references.md, "ACDC"); each is jittered per patient.
_GROUP_PARAMS: dict[str, dict[str, float]] = {
    "NOR": {"edv": 128, "ef": 0.62, "radius": 27.0, "wall": 8.0, "rvedv": 140, "rvef": 0.55},
    "DCM": {"edv": 281, "ef": 0.17, "radius": 35.0, "wall": 6.5, "rvedv": 190, "rvef": 0.38},
    "HCM": {"edv": 142, "ef": 0.70, "radius": 27.5, "wall": 11.0, "rvedv": 120, "rvef": 0.60},
    "MINF": {"edv": 179, "ef": 0.31, "radius": 30.0, "wall": 7.0, "rvedv": 150, "rvef": 0.45},
    "RV": {"edv": 125, "ef": 0.55, "radius": 26.5, "wall": 7.5, "rvedv": 212, "rvef": 0.38},
}

_SHAPES = ((216, 256), (256, 216), (154, 224), (224, 154), (232, 256), (256, 256), (208, 256), (192, 224))
_SLICE_SPACINGS = (10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 5.0, 6.5, 7.0)

# Tissue intensities relative to ACDC's 99th percentile (docs/references.md, "ACDC").
_TISSUE = {
    "air": 0.01, "body": 0.24, "fat": 0.85, "muscle": 0.27, "lung": 0.05, "liver": 0.33,
    "aorta": 0.74, "spine": 0.42, "lv_blood": 0.68, "rv_blood": 0.59, "myo": 0.31,
}  # fmt: skip

ACDC_AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])
"""ACDC's sform (code 2): it claims 1 mm voxels; the true spacing is only in pixdim."""


@dataclass
class SyntheticPatient:
    """One synthetic patient: ED/ES volumes (x, y, slice), labels, spacing (mm) and Info.cfg fields."""

    patient: str
    info: dict[str, int | float | str]
    ed_image: np.ndarray
    ed_label: np.ndarray
    es_image: np.ndarray
    es_label: np.ndarray
    spacing: tuple[float, float, float]


def _ellipsoid_profile(h: np.ndarray, radius: float, length: float) -> np.ndarray:
    """Radius of a half-ellipsoid (apex at h = 0, base at h = length) at heights ``h`` (mm); 0 outside."""
    u = (length - h) / length
    inside = (h >= 0) & (h <= length)
    return np.where(inside, radius * np.sqrt(np.clip(1 - u * u, 0, None)), 0.0)


def _harmonics(rng: np.random.Generator, orders: range, amplitude: float, drift: float) -> np.ndarray:
    """Rows (order m, amplitude, phase, drift) of a random angular perturbation; amplitudes fall as 1/m.

    ``drift`` (rad per unit of normalised height) turns each harmonic along the long axis,
    so the shape changes from apex to base and a slice at another level cuts another shape.
    """
    m = np.asarray(orders, dtype=float)
    amps = rng.uniform(0.3, 1.0, m.size) * amplitude * m[0] / m
    return np.stack([m, amps, rng.uniform(0, 2 * np.pi, m.size), rng.normal(0, drift, m.size)])


def _ripple(theta: np.ndarray, harmonics: np.ndarray, z: float) -> np.ndarray:
    """sum_m a_m cos(m theta + phi_m + drift_m z) at angles ``theta`` and normalised height ``z``."""
    out = np.zeros(theta.shape, np.float32)
    for m, a, phi, drift in harmonics.T:
        out += np.float32(a) * np.cos(np.float32(m) * theta + np.float32(phi + drift * z))
    return out


def _pattern(theta: np.ndarray, harmonics: np.ndarray, z: float) -> np.ndarray:
    """:func:`_ripple` scaled to unit variance over the angle: a fine random pattern for trabeculae."""
    return _ripple(theta, harmonics, z) / np.float32(np.sqrt(0.5 * np.sum(harmonics[1] ** 2)))


def _ellipse_q(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float, angle: float) -> np.ndarray:
    """Quadratic form of an ellipse: <= 1 inside."""
    c, s = np.cos(angle), np.sin(angle)
    u = (x - cx) * c + (y - cy) * s
    v = -(x - cx) * s + (y - cy) * c
    return (u / a) ** 2 + (v / b) ** 2


def _blob(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float,
          angle: float, irregularity: float) -> np.ndarray:
    """Mask of an ellipse whose outline is perturbed by random harmonics 2-6 (an organ, not a disc)."""
    c, s = np.cos(angle), np.sin(angle)
    u, v = ((x - cx) * c + (y - cy) * s) / a, (-(x - cx) * s + (y - cy) * c) / b
    outline = 1 + _ripple(np.arctan2(v, u), _harmonics(rng, range(2, 7), irregularity, 0.0), 0.0)
    return u * u + v * v <= outline * outline


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Zero-mean smooth random field of ``shape``: coarse Gaussian noise upsampled bilinearly."""
    coarse = rng.standard_normal((shape[0] // cell + 2, shape[1] // cell + 2)).astype(np.float32)
    fx = np.arange(shape[0], dtype=np.float32) / cell
    fy = np.arange(shape[1], dtype=np.float32) / cell
    ix, iy = fx.astype(int), fy.astype(int)
    wx, wy = (fx - ix)[:, None], (fy - iy)[None, :]
    c00, c10 = coarse[ix][:, iy], coarse[ix + 1][:, iy]
    c01, c11 = coarse[ix][:, iy + 1], coarse[ix + 1][:, iy + 1]
    return (c00 * (1 - wx) + c10 * wx) * (1 - wy) + (c01 * (1 - wx) + c11 * wx) * wy


ANNOTATION_JITTER_MM = 1.2
"""Scale (mm) of the smooth random displacement of each contoured slice's labels (about 0.8 mm std per axis)."""


def _annotate(rng: np.random.Generator, label: np.ndarray, spacing_mm: float) -> np.ndarray:
    """``label`` (x, y, slice) as drawn by hand: each slice displaced by its own smooth field, nearest neighbour."""
    shape = label.shape[:2]
    cell = max(4, round(15 / spacing_mm))  # outlines wander on a ~15 mm scale, not pixel by pixel
    grid = np.meshgrid(np.arange(shape[0], dtype=np.float32), np.arange(shape[1], dtype=np.float32), indexing="ij")
    out = np.empty_like(label)
    for k in range(label.shape[2]):
        shift = [ANNOTATION_JITTER_MM / spacing_mm * _smooth_noise(rng, shape, cell) for _ in range(2)]
        out[:, :, k] = map_coordinates(label[:, :, k], [g + d for g, d in zip(grid, shift)], order=0, mode="nearest")
    return out


def _anatomy(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, t: np.ndarray, cell: int) -> np.ndarray:
    """Static surroundings in the heart's frame (mm, 2D grids): body, fat, muscle, lungs, liver, aorta, spine.

    Outlines are irregular and the subcutaneous fat varies in thickness, as in a real chest.
    Returns (X, Y, slices); ``t`` is 0 at the basal slice and 1 at the apical one (the liver rises toward the apex).
    """
    s = rng.uniform(0.9, 1.15)
    bx, by, ba, bb = rng.normal(-30, 8), rng.normal(20, 6), 200 * s, 140 * s
    theta = np.arctan2((y - by) / bb, (x - bx) / ba)
    rb = np.sqrt(_ellipse_q(x, y, bx, by, ba, bb, 0.0)) / (1 + _ripple(theta, _harmonics(rng, range(2, 6), 0.06, 0), 0))
    fat = rng.uniform(6, 14) * np.clip(1 + _ripple(theta, _harmonics(rng, range(1, 5), 1.2, 0), 0), 0.0, None)
    depth = (1 - rb) * 0.5 * (ba + bb)  # mm inside the body outline
    img = np.full(x.shape, _TISSUE["air"], np.float32)
    img[depth >= 0] = _TISSUE["fat"]
    img[depth >= fat] = _TISSUE["muscle"]
    img[depth >= fat + rng.uniform(8, 16)] = _TISSUE["body"]
    for cx, cy, a, b, ang in ((70, 35, 42, 68, 0.35), (-105, 35, 48, 75, -0.25)):
        lx, ly = cx + rng.normal(0, 5), cy + rng.normal(0, 5)
        lung = _blob(rng, x, y, lx, ly, a * s, b * s, ang, 0.12)
        img[lung] = _TISSUE["lung"]
        for _ in range(int(rng.integers(4, 9))):  # pulmonary vessels
            vx, vy = lx + rng.uniform(-0.6, 0.6) * a * s, ly + rng.uniform(-0.6, 0.6) * b * s
            img[lung & ((x - vx) ** 2 + (y - vy) ** 2 <= rng.uniform(1.5, 3.5) ** 2)] = _TISSUE["body"]
    img[(x - 22) ** 2 + (y - 70 * s) ** 2 <= rng.uniform(10, 13) ** 2] = _TISSUE["aorta"]
    spine = _blob(rng, x, y, -5, 98 * s, 17, 16, 0.0, 0.08)
    img[spine] = _TISSUE["spine"]
    img[spine & ((x + 5) ** 2 + (y - 98 * s) ** 2 <= 9**2)] = _TISSUE["spine"] * 0.7
    texture = 1 + 0.08 * _smooth_noise(rng, x.shape, cell) + 0.04 * _smooth_noise(rng, x.shape, max(2, cell // 3))
    img = img * np.where(img > 0.2, texture, 1)
    volume = np.repeat(img[:, :, None], t.size, axis=2)
    liver = _blob(rng, x, y, -70 + rng.normal(0, 6), -15, 95 * s, 70 * s, 0.4, 0.08)
    liver_q = np.where(liver, _ellipse_q(x, y, -70, -15, 95 * s, 70 * s, 0.4), np.inf)
    liver_size = np.clip(1.6 * (t - 0.3), 0, 1)
    for k in np.nonzero(liver_size > 0)[0]:
        inside = liver_q <= liver_size[k] ** 2
        volume[:, :, k][inside] = _TISSUE["liver"] * texture[inside]
    return volume


@dataclass(frozen=True)
class _HeartShape:
    """A patient's heart in material coordinates: angle about the LV axis, normalised height z (0 apex, 1 base)."""

    endo: np.ndarray  # harmonics (order, amplitude, phase, drift) of the endocardium
    epi: np.ndarray  # ... of the epicardium
    rv: np.ndarray  # ... of the RV outline about the RV ellipse's centre
    rv_es: np.ndarray  # ... added at ES only: the RV contracts unevenly
    endo_es: np.ndarray  # ... added at ES only: regional differences in LV wall motion
    trabeculae: np.ndarray  # fine harmonics: where LV trabeculae reach into the cavity
    rv_trabeculae: np.ndarray  # ... RV trabeculae
    fat: np.ndarray  # harmonics of the patchy epicardial fat
    rv_angle: float  # direction of the RV from the LV centre (rad)
    papillary: tuple[tuple[float, float, float, float], ...]  # (angle from rv_angle, radius mm, z low, z high)
    moderator: tuple[float, float, float]  # moderator band: tangential offset (x RV half-width), z low, z high
    atrium: float  # left atrial radius (mm) above the base


@dataclass(frozen=True)
class _Cut:
    """One cut through the heart: radii (mm) and normalised height of its material, rotation (rad), centre (mm)."""

    z: float
    endo: float
    epi: float
    trabecular: float  # inner radius of the trabecular layer; trabeculae fill it more at ES
    rv: float
    fill: float  # threshold of the trabecular pattern (lower: fuller)
    papillary: float  # papillary muscle scale (thicker at ES)
    attachment: float  # papillary centre inside the endocardium, in muscle radii (apart at ED, merged at ES)
    contracted: bool  # ES: the RV's uneven contraction applies
    rotation: float  # twist of the material at this height
    centre: tuple[float, float]


POOL_RV, POOL_LV = 1, 3
"""Blood pool codes returned by :func:`_heart_slice` (the atria and aortic root count as LV-side blood)."""


def _heart_slice(x: np.ndarray, y: np.ndarray, shape: _HeartShape, cut: _Cut) -> tuple[np.ndarray, ...]:
    """Label map, heart-tissue intensity (0 outside the heart) and blood-pool code of one cut, on 2D grids in mm.

    Labels follow ACDC: trabeculae and papillary muscles belong to the LV (RV) cavity,
    so the dark wall seen in the image reaches further in than the Myo label.
    """
    dx, dy = x - cut.centre[0], y - cut.centre[1]
    rho = np.sqrt(dx * dx + dy * dy) + 1e-6
    theta = np.arctan2(dy, dx) - np.float32(cut.rotation + shape.rv_angle)  # material angle, 0 toward the RV
    label = np.zeros(x.shape, np.uint8)
    tissue = np.zeros(x.shape, np.float32)
    pool = np.zeros(x.shape, np.uint8)
    r_epi = cut.epi * (1 + _ripple(theta, shape.epi, cut.z))
    inside_epi = rho < r_epi
    if cut.z > 1:  # above the base: left atrium and aortic root, unlabelled
        rise = (cut.z - 1) / 0.5
        la = rho < shape.atrium * np.sqrt(max(1 - rise * rise, 0)) * (1 + _ripple(theta, shape.endo, cut.z))
        ao = (dx - 0.7 * shape.atrium * np.cos(shape.rv_angle - 0.9)) ** 2 + (
            dy - 0.7 * shape.atrium * np.sin(shape.rv_angle - 0.9)) ** 2 < (0.45 * shape.atrium) ** 2
        for blood in (la, ao):
            tissue[binary_dilation(blood, iterations=2) & (tissue == 0)] = _TISSUE["myo"]
            tissue[blood], pool[blood] = _TISSUE["lv_blood"], POOL_LV
    if cut.rv > 0:
        ca, sa = np.cos(shape.rv_angle + cut.rotation), np.sin(shape.rv_angle + cut.rotation)
        d = _RV_OFFSET[0] * cut.epi + _RV_OFFSET[1] * cut.rv
        a, b = _RV_AXES[0] * cut.rv, _RV_AXES[1] * cut.rv
        u, v = (dx * ca + dy * sa - d) / a, (-dx * sa + dy * ca) / b
        q = np.sqrt(u * u + v * v)
        psi = np.arctan2(v, u)
        outline = 1 + _ripple(psi, shape.rv, cut.z) + (_ripple(psi, shape.rv_es, cut.z) if cut.contracted else 0)
        rv = (q <= outline) & ~inside_epi
        wall = (q <= outline + 2.5 / a) & ~rv & ~inside_epi
        label[rv] = 1
        tissue[wall] = _TISSUE["myo"]
        tissue[rv], pool[rv] = _TISSUE["rv_blood"], POOL_RV
        # Trabeculae along the free wall toward the apex, and the moderator band across the cavity.
        depth = (outline - q) * a / 6.0
        threshold = cut.fill - 0.3 + 1.5 * depth + 1.5 * cut.z
        fingers = rv & (depth < 1) & (_pattern(psi, shape.rv_trabeculae, cut.z) > threshold)
        offset, low, high = shape.moderator
        band = rv & (np.abs(v - offset) * b < 1.3) & (u > -0.3) & (low < cut.z < high)
        tissue[fingers | band], pool[fingers | band] = _TISSUE["myo"], 0
    if cut.epi > 0:
        # Epicardial fat in patches (grooves and along the free walls), not a rim.
        thickness = 8.0 * (0.5 + cut.z) * np.clip(_ripple(theta, shape.fat, cut.z) - 0.3, 0, None)
        fat = (rho < r_epi + thickness) & ~inside_epi & (tissue == 0)
        tissue[fat] = _TISSUE["fat"] * 0.8
        label[inside_epi] = 2
        tissue[inside_epi] = _TISSUE["myo"]
    if cut.endo > 0:
        regional = _ripple(theta, shape.endo_es, cut.z) if cut.contracted else 0
        r_endo = cut.endo * (1 + _ripple(theta, shape.endo, cut.z) + regional)
        lv = rho < r_endo
        label[lv] = 3
        tissue[lv], pool[lv] = _TISSUE["lv_blood"], POOL_LV
        depth = (r_endo - rho) / max(cut.endo - cut.trabecular, 0.5)
        muscle = lv & (depth < 1) & (_pattern(theta, shape.trabeculae, cut.z) > cut.fill + 1.5 * depth)
        for angle, radius, low, high in shape.papillary:
            if low < cut.z < high:
                size = radius * cut.papillary * np.sqrt(np.sin(np.pi * (cut.z - low) / (high - low)))
                reach = cut.endo - cut.attachment * size
                pu = rho * np.cos(theta - angle) - reach
                pv = rho * np.sin(theta - angle)
                muscle |= lv & ((pu / size) ** 2 + (pv / (1.3 * size)) ** 2 <= 1)
        tissue[muscle], pool[muscle] = _TISSUE["myo"], 0
    return label, tissue, pool


_RV_OFFSET = (0.45, 0.45)  # RV ellipse centre from the LV centre: x epicardial radius, x RV size
_RV_AXES = (0.85, 1.5)  # RV ellipse semi-axes (radial, tangential) x RV size


@functools.lru_cache(maxsize=1)
def _crescent_table() -> tuple[np.ndarray, np.ndarray]:
    """Area of the unperturbed RV crescent for epicardial radius 1, tabulated over RV size q = size / epi."""
    q = np.linspace(0, 4, 81)
    step = 0.025
    gx, gy = np.meshgrid(np.arange(-1, 6, step), np.arange(-6.5, 6.5, step), indexing="ij")
    outside = gx**2 + gy**2 >= 1
    area = [
        ((((gx - _RV_OFFSET[0] - _RV_OFFSET[1] * qi) / (_RV_AXES[0] * qi)) ** 2 + (gy / (_RV_AXES[1] * qi)) ** 2 <= 1)
         & outside).sum() * step**2 if qi > 0 else 0.0
        for qi in q
    ]  # fmt: skip
    return q, np.asarray(area)


def _rv_volume(size: np.ndarray, epi: np.ndarray, dz: float) -> float:
    """RV cavity volume (mm^3) of a stack with per-slice RV sizes and epicardial radii (unperturbed shapes)."""
    q, table = _crescent_table()
    safe = np.where(epi > 0, epi, 1.0)
    crescent = safe**2 * np.interp(size / safe, q, table)
    full = np.pi * _RV_AXES[0] * _RV_AXES[1] * size**2
    return float(np.sum(np.where(epi > 0, crescent, full)) * dz)


def _solve_scale(volume_of, target: float, high: float) -> float:
    """Bisection for the scale in [0, high] whose (increasing) volume matches ``target``."""
    low = 0.0
    for _ in range(30):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if volume_of(mid) < target else (low, mid)
    return 0.5 * (low + high)


def _es_radii(h: np.ndarray, endo_ed_fn, epi_ed_fn, endo_es: np.ndarray, long_ratio: float) -> np.ndarray:
    """ES epicardial radius from ED wall area at the material height (mass conservation, slab thinning)."""
    h_ed = h / long_ratio
    ring_ed = epi_ed_fn(h_ed) ** 2 - endo_ed_fn(h_ed) ** 2
    return np.sqrt(endo_es**2 + ring_ed / long_ratio) * (ring_ed > 0)


def synth_patient(seed: int, number: int) -> SyntheticPatient:
    """Patient ``number`` of the cohort ``seed``: a pure function of (seed, number)."""
    if number < 1:
        raise ValueError(f"patient number must be >= 1, got {number}")
    rng = np.random.default_rng([seed, number])
    group = GROUPS[(number - 1) % len(GROUPS)]
    p = _GROUP_PARAMS[group]
    edv = p["edv"] * rng.uniform(0.85, 1.15) * 1000.0  # mm^3
    ef = float(np.clip(p["ef"] + rng.normal(0, 0.04), 0.08, 0.8))
    radius = p["radius"] * rng.uniform(0.92, 1.08)
    wall = p["wall"] * rng.uniform(0.9, 1.1)
    length = edv / (2 / 3 * np.pi * radius**2)  # half-ellipsoid cavity
    # Through-plane motion: the apex stays and the base descends toward it, less in a weak heart.
    descent = rng.uniform(10, 15) * float(np.clip(ef / 0.5, 0.5, 1.0))
    length_es = length - descent
    long_ratio = length_es / length
    radius_es = np.sqrt(edv * (1 - ef) / (2 / 3 * np.pi * length_es))
    rv_ef = float(np.clip(p["rvef"] + rng.normal(0, 0.05), 0.15, 0.75))

    shape = _SHAPES[rng.integers(len(_SHAPES))]
    s_xy = float(np.round(rng.uniform(1.2, 1.9), 4))
    dz = float(_SLICE_SPACINGS[rng.integers(len(_SLICE_SPACINGS))])
    top = length + dz * rng.uniform(0.3, 1.1)
    n_slices = int(np.clip(np.ceil((top + wall + 2) / dz) + 1, 6, 12))
    h = (top - dz * np.arange(n_slices)).astype(np.float32)
    trabecular_width = rng.uniform(2.5, 4.5)

    def endo_ed_fn(hh: np.ndarray) -> np.ndarray:
        return _ellipsoid_profile(hh, radius, length)

    def epi_ed_fn(hh: np.ndarray) -> np.ndarray:  # the wall's half-ellipsoid, cut at the base plane
        return _ellipsoid_profile(hh + wall, radius + wall, length + wall) * (hh <= length)

    def endo_es_fn(hh: np.ndarray) -> np.ndarray:
        return _ellipsoid_profile(hh, radius_es, length_es)

    def epi_es_fn(hh: np.ndarray) -> np.ndarray:
        return _es_radii(hh, endo_ed_fn, epi_ed_fn, endo_es_fn(hh), long_ratio)

    def trabecular_ed_fn(hh: np.ndarray) -> np.ndarray:  # inner edge of the trabecular layer, deeper toward the apex
        endo = endo_ed_fn(hh)
        return np.clip(endo - trabecular_width * (1.6 - 0.6 * hh / length), 0.3 * endo, None)

    def trabecular_es_fn(hh: np.ndarray) -> np.ndarray:  # the layer keeps its volume, so it thickens at ES
        h_ed = hh / long_ratio
        layer = endo_ed_fn(h_ed) ** 2 - trabecular_ed_fn(h_ed) ** 2
        endo = endo_es_fn(hh)
        return np.sqrt(np.clip(endo**2 - layer / long_ratio, (0.3 * endo) ** 2, None))

    # RV: a shorter half-ellipsoid profile whose size is solved for the group's RV volumes.
    def rv_profile(hh: np.ndarray, lv_length: float) -> np.ndarray:
        rv_len = 0.85 * lv_length
        return _ellipsoid_profile(hh - (lv_length - rv_len), 1.0, rv_len) * (hh <= lv_length + 4)

    endo_ed, epi_ed, epi_es = endo_ed_fn(h), epi_ed_fn(h), epi_es_fn(h)
    rvedv = p["rvedv"] * rng.uniform(0.85, 1.15) * 1000.0
    rv_ed_scale = _solve_scale(lambda s: _rv_volume(s * rv_profile(h, length), epi_ed, dz), rvedv, 150.0)
    rvedv_drawn = _rv_volume(rv_ed_scale * rv_profile(h, length), epi_ed, dz)
    rv_es_scale = _solve_scale(
        lambda s: _rv_volume(s * rv_profile(h, length_es), epi_es, dz), rvedv_drawn * (1 - rv_ef), 150.0
    )

    # Pixel grid in the heart's frame (mm); the heart sits near the image centre.
    offset = rng.normal(0, 12, 2) + np.array(shape) * s_xy * rng.uniform(-0.05, 0.05, 2)
    rot = rng.normal(0, 0.25)
    gx = (np.arange(shape[0], dtype=np.float32) - shape[0] / 2) * s_xy - offset[0]
    gy = (np.arange(shape[1], dtype=np.float32) - shape[1] / 2) * s_xy - offset[1]
    cr, sr = np.float32(np.cos(rot)), np.float32(np.sin(rot))
    x = cr * gx[:, None] + sr * gy[None, :]
    y = -sr * gx[:, None] + cr * gy[None, :]
    t = (np.arange(n_slices) / max(n_slices - 1, 1)).astype(np.float32)
    tilt = rng.normal(0, 0.08, 2)  # long axis not quite through-plane

    background = _anatomy(rng, x, y, t, cell=max(4, round(12 / s_xy)))
    heart = _HeartShape(
        endo=_harmonics(rng, range(2, 5), 0.10, 1.5),
        epi=_harmonics(rng, range(2, 5), 0.07, 1.5),
        endo_es=_harmonics(rng, range(3, 8), 0.08, 3.0),
        rv=_harmonics(rng, range(2, 6), 0.16, 5.0),
        rv_es=_harmonics(rng, range(3, 9), 0.2, 5.0),
        trabeculae=_harmonics(rng, range(5, 15), 1.0, 8.0),
        rv_trabeculae=_harmonics(rng, range(5, 14), 1.0, 8.0),
        fat=_harmonics(rng, range(1, 4), 0.6, 1.0),
        rv_angle=float(np.pi + rng.normal(0, 0.2)),
        papillary=tuple(
            (angle + rng.normal(0, 0.15), rng.uniform(4.0, 6.0), rng.uniform(0.1, 0.25), rng.uniform(0.6, 0.8))
            for angle in (2.3, -2.0)
        ),
        moderator=(rng.uniform(-0.3, 0.3), rng.uniform(0.15, 0.3), rng.uniform(0.4, 0.55)),
        atrium=0.8 * radius * rng.uniform(0.9, 1.1),
    )
    twist = (rng.uniform(0.12, 0.22), -rng.uniform(0.04, 0.1))  # ES rotation (rad) at the apex and at the base
    fill_ed, fill_es = 0.5, max(0.5 - 2.2 * ef, -0.7)  # trabeculae fill more of their layer as the heart contracts
    es_shift = rng.normal(0, 1.5, 2)
    # Flow: blood brightness changes between frames, overall and in smooth patches.
    gains = {0: (1.0, 1.0), 1: (rng.uniform(0.75, 1.05), rng.uniform(0.75, 1.05))}  # (LV side, RV) per phase
    flow = [1 + rng.uniform(0.08, 0.2) * _smooth_noise(rng, shape, max(3, round(8 / s_xy))) for _ in range(2)]
    contrast = rng.uniform(0.9, 1.1)
    noise_sigma = rng.uniform(0.025, 0.05)
    bias = rng.normal(0, 0.15, 5)
    blur_px = rng.uniform(0.5, 0.9)
    dtype_draw = rng.uniform()
    dtype = np.float32 if dtype_draw < 0.7 else (np.int16 if dtype_draw < 0.9 else np.uint8)
    top_value = float(rng.uniform(398, 4031)) if dtype is np.int16 else 255.0
    noise = rng.standard_normal((2, 2, *background.shape), dtype=np.float32) * np.float32(noise_sigma)
    u, v = x / 150.0, y / 150.0  # smooth multiplicative bias: quadratic in-plane, linear along the stack
    bias_field = (np.exp(bias[0] * u + bias[1] * v + bias[2] * u * v + bias[3] * u**2)[:, :, None]
                  * np.exp(bias[4] * (t - 0.5)).astype(np.float32))  # fmt: skip

    def cut_at(phase: int, hh: float) -> _Cut | None:
        """The heart's cut at height ``hh`` in ``phase`` (0 ED, 1 ES); None where the slice misses it."""
        lv_length = (length, length_es)[phase]
        z = hh / lv_length
        arr = np.float32([hh])
        cut = _Cut(
            z=z,
            endo=float((endo_ed_fn, endo_es_fn)[phase](arr)[0]),
            epi=float((epi_ed_fn, epi_es_fn)[phase](arr)[0]),
            trabecular=float((trabecular_ed_fn, trabecular_es_fn)[phase](arr)[0]),
            rv=float((rv_ed_scale, rv_es_scale)[phase] * rv_profile(arr, lv_length)[0]),
            fill=(fill_ed, fill_es)[phase],
            papillary=(1.0, 1.1 / np.sqrt(long_ratio))[phase],
            attachment=(1.8, 0.4)[phase],
            contracted=bool(phase),
            rotation=phase * (twist[0] * (1 - z) + twist[1] * z),
            centre=(float(tilt[0] * (hh - length / 2) + phase * es_shift[0]),
                    float(tilt[1] * (hh - length / 2) + phase * es_shift[1])),
        )  # fmt: skip
        return cut if cut.epi > 0 or cut.rv > 0 or 1 < z < 1.5 else None

    # The heart is drawn slice by slice in a window around its centre (the costly part of the phantom).
    # Partial volume: each slice averages three cuts through its slab; its label is the central cut's.
    extent = float(max(epi_ed.max(), epi_es.max()) + 1.8 * max(rv_ed_scale, 1.0) + 16.0)
    half = int(np.ceil(extent / s_xy))
    phases = {}
    for phase in (0, 1):
        image = background.copy()
        label = np.zeros(background.shape, np.uint8)
        for k in range(n_slices):
            cuts = [cut_at(phase, float(h[k] + o * dz)) for o in (-1 / 3, 0, 1 / 3)]
            if all(c is None for c in cuts):
                continue
            centre = next(c.centre for c in cuts if c is not None)
            ci = round((cr * centre[0] - sr * centre[1] + offset[0]) / s_xy + shape[0] / 2)
            cj = round((sr * centre[0] + cr * centre[1] + offset[1]) / s_xy + shape[1] / 2)
            win = (slice(max(ci - half, 0), max(ci + half, 0)), slice(max(cj - half, 0), max(cj + half, 0)))
            view = background[win + (k,)]
            slab = np.zeros(view.shape, np.float32)
            for o, cut in enumerate(cuts):
                if cut is None:
                    slab += view
                    continue
                lab, tissue, pool = _heart_slice(x[win], y[win], heart, cut)
                scale = np.where(pool == POOL_LV, gains[phase][0], np.where(pool == POOL_RV, gains[phase][1], 1.0))
                scale = scale * np.where(pool > 0, flow[phase][win], 1.0)
                slab += np.where(tissue > 0, tissue * contrast * scale, view)
                if o == 1:
                    label[win + (k,)] = lab
            image[win + (k,)] = slab / 3
        image = gaussian_filter(image, sigma=(blur_px, blur_px, 0), truncate=2.5)
        image *= bias_field
        image += noise[phase, 0]
        image = np.hypot(image, noise[phase, 1], out=image)  # Rician magnitude
        image *= np.float32(1 / 1.05)
        np.clip(image, 0, 1, out=image)
        image *= np.float32(top_value)
        phases[phase] = (label, image.astype(np.float32) if dtype is np.float32 else np.round(image).astype(dtype))

    es_frame = int(rng.integers(6, 17))
    info: dict[str, int | float | str] = {
        "ED": 1,
        "ES": es_frame,
        "Group": group,
        "Height": float(np.round(rng.uniform(150, 195), 1)),
        "NbFrame": int(rng.integers(max(es_frame + 6, 20), 36)),
        "Weight": float(np.round(rng.uniform(50, 120), 1)),
    }
    return SyntheticPatient(
        patient=patient_id(number),
        info=info,
        ed_image=phases[0][1],
        ed_label=_annotate(rng, phases[0][0], s_xy),
        es_image=phases[1][1],
        es_label=_annotate(rng, phases[1][0], s_xy),
        spacing=(s_xy, s_xy, dz),
    )


def write_acdc_nifti(path: str | Path, data: np.ndarray, spacing: tuple[float, ...]) -> Path:
    """Write ``data`` as ACDC does: sform code 2 = diag(-1, -1, 1), qform code 0, spacing only in pixdim, NaN slope."""
    header = nib.Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_data_dtype(data.dtype)
    header.set_zooms(tuple(spacing) + (1.0,) * (data.ndim - len(spacing)))
    header.set_sform(ACDC_AFFINE, code=2)
    header["qform_code"] = 0
    header.set_xyzt_units("mm", "sec")
    image = nib.Nifti1Image(data, None, header)
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))  # nibabel's gzip writer stores no time stamp: output is byte-identical
    return Path(path)


def write_patient(out: str | Path, patient: SyntheticPatient, *, with_4d: bool = False) -> Path:
    """Write one patient in the ACDC layout under ``out/database/{training,testing}/``; returns its folder.

    ``with_4d`` adds ``patientNNN_4d.nii.gz``: ED, ES and frames blended between them
    (a cheap stand-in; nothing in featreg reads it).
    """
    folder = Path(out) / "database" / subset_of(patient.patient) / patient.patient
    folder.mkdir(parents=True, exist_ok=True)
    ed, es = int(patient.info["ED"]), int(patient.info["ES"])
    for frame, image, label in ((ed, patient.ed_image, patient.ed_label), (es, patient.es_image, patient.es_label)):
        write_acdc_nifti(folder / f"{patient.patient}_frame{frame:02d}.nii.gz", image, patient.spacing)
        write_acdc_nifti(folder / f"{patient.patient}_frame{frame:02d}_gt.nii.gz", label, patient.spacing)
    if with_4d:
        n_frames = int(patient.info["NbFrame"])
        phase = np.arange(1, n_frames + 1, dtype=np.float32)
        weight = np.where(phase <= es, (phase - ed) / (es - ed), (n_frames + 1 - phase) / (n_frames + 1 - es))
        weight = (0.5 - 0.5 * np.cos(np.pi * np.clip(weight, 0, 1))).astype(np.float32)
        movie = patient.ed_image[..., None] * (1 - weight) + patient.es_image[..., None] * weight
        movie = movie.astype(patient.ed_image.dtype)
        write_acdc_nifti(folder / f"{patient.patient}_4d.nii.gz", movie, patient.spacing + (1.0,))
    cfg = "".join(f"{key}: {value}\n" for key, value in patient.info.items())
    with atomic_path(folder / "Info.cfg") as tmp:
        tmp.write_text(cfg)
    return folder


def write_cohort(
    out: str | Path, patients: int, *, seed: int = 0, start: int = 1, with_4d: bool = False, progress: bool = True
) -> list[Path]:
    """Write patients ``start`` .. ``start + patients - 1`` of cohort ``seed`` under ``out`` (ACDC layout)."""
    if patients < 1:
        raise ValueError(f"patients must be >= 1, got {patients}")
    if start < 1:
        raise ValueError(f"start must be >= 1, got {start}")
    numbers = range(start, start + patients)
    logger.info("writing %d synthetic patients (seed %d) to %s", patients, seed, out)
    return [
        write_patient(out, synth_patient(seed, n), with_4d=with_4d)
        for n in tqdm(numbers, desc="synth", unit="patient", disable=not progress)
    ]
