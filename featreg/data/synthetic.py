"""Synthetic cardiac cine MRI cohort in the ACDC layout, with ACDC's header quirks.

Each patient is a short-axis stack at ED and ES: LV blood pool, myocardial ring
and RV crescent whose sizes follow ACDC's per-group volumes and ejection
fractions (REFERENCE.md section 2), an apex-base taper, mass-conserving wall
thickening, smooth random shape perturbation, surrounding anatomy (body wall,
subcutaneous fat, lungs, liver, aorta, spine), partial-volume blur, a
multiplicative bias field and Rician noise. Patient ``k`` depends only on
``(seed, k)``, so growing a cohort never changes the patients already written.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

from featreg.data.acdc import patient_id, subset_of
from featreg.io import atomic_path

logger = logging.getLogger(__name__)

GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")
"""ACDC's pathology groups; patient ``k`` gets ``GROUPS[(k - 1) % 5]`` so any run of five is balanced."""

# Per group: LV end-diastolic volume (mL), LV ejection fraction, ED cavity radius
# at the base (mm), ED wall thickness (mm), RV end-diastolic volume (mL) and RV
# ejection fraction. Medians from ACDC (REFERENCE.md section 2); each is jittered per patient.
_GROUP_PARAMS: dict[str, dict[str, float]] = {
    "NOR": {"edv": 128, "ef": 0.62, "radius": 27.0, "wall": 8.0, "rvedv": 140, "rvef": 0.55},
    "DCM": {"edv": 281, "ef": 0.17, "radius": 35.0, "wall": 6.5, "rvedv": 190, "rvef": 0.38},
    "HCM": {"edv": 142, "ef": 0.70, "radius": 27.5, "wall": 11.0, "rvedv": 120, "rvef": 0.60},
    "MINF": {"edv": 179, "ef": 0.31, "radius": 30.0, "wall": 7.0, "rvedv": 150, "rvef": 0.45},
    "RV": {"edv": 125, "ef": 0.55, "radius": 26.5, "wall": 7.5, "rvedv": 212, "rvef": 0.38},
}

_SHAPES = ((216, 256), (256, 216), (154, 224), (224, 154), (232, 256), (256, 256), (208, 256), (192, 224))
_SLICE_SPACINGS = (10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 5.0, 6.5, 7.0)

# Tissue intensities relative to ACDC's 99th percentile (REFERENCE.md section 2).
_TISSUE = {
    "air": 0.01, "body": 0.24, "fat": 0.95, "muscle": 0.27, "lung": 0.05, "liver": 0.33,
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


def _harmonics(rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """Random (amplitude, phase) of angular harmonics 2-4 for a smooth boundary perturbation."""
    amps = rng.uniform(0.3, 1.0, 3) * amplitude / np.arange(2, 5)
    return np.stack([amps, rng.uniform(0, 2 * np.pi, 3)])


def _angular_basis(cos_t: np.ndarray, sin_t: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(cos m theta, sin m theta) for m = 2, 3, 4, from cos/sin of theta (no trigonometry per pixel)."""
    basis, cm, sm = [], cos_t, sin_t
    for _ in range(3):
        cm, sm = cm * cos_t - sm * sin_t, sm * cos_t + cm * sin_t
        basis.append((cm, sm))
    return basis


def _perturb(basis: list[tuple[np.ndarray, np.ndarray]], harmonics: np.ndarray) -> np.ndarray:
    """1 + sum_m a_m cos(m theta + phi_m) for m = 2, 3, 4."""
    out = np.ones_like(basis[0][0])
    for (cm, sm), (a, phi) in zip(basis, harmonics.T):
        out += np.float32(a * np.cos(phi)) * cm - np.float32(a * np.sin(phi)) * sm
    return out


def _ellipse_q(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float, angle: float) -> np.ndarray:
    """Quadratic form of an ellipse: <= 1 inside."""
    c, s = np.cos(angle), np.sin(angle)
    u = (x - cx) * c + (y - cy) * s
    v = -(x - cx) * s + (y - cy) * c
    return (u / a) ** 2 + (v / b) ** 2


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


def _anatomy(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, t: np.ndarray, cell: int) -> np.ndarray:
    """Static surroundings in the heart's frame (mm, 2D grids): body, fat, muscle, lungs, liver, aorta, spine.

    Returns (X, Y, slices); ``t`` is 0 at the basal slice and 1 at the apical one (the liver rises toward the apex).
    """
    s = rng.uniform(0.9, 1.15)
    bx, by, ba, bb = rng.normal(-30, 8), rng.normal(20, 6), 175 * s, 125 * s
    body = _ellipse_q(x, y, bx, by, ba, bb, 0.0)
    img = np.full(x.shape, _TISSUE["air"], np.float32)
    img[body <= 1] = _TISSUE["fat"]
    fat = rng.uniform(8, 16)
    img[_ellipse_q(x, y, bx, by, ba - fat, bb - fat, 0.0) <= 1] = _TISSUE["muscle"]
    img[_ellipse_q(x, y, bx, by, ba - fat - 12, bb - fat - 12, 0.0) <= 1] = _TISSUE["body"]
    for cx, cy, a, b, ang in ((70, 35, 42, 68, 0.35), (-105, 35, 48, 75, -0.25)):
        img[_ellipse_q(x, y, cx + rng.normal(0, 5), cy + rng.normal(0, 5), a * s, b * s, ang) <= 1] = _TISSUE["lung"]
    img[(x - 22) ** 2 + (y - 70 * s) ** 2 <= 11**2] = _TISSUE["aorta"]
    img[(x + 5) ** 2 + (y - 98 * s) ** 2 <= 17**2] = _TISSUE["spine"]
    img[(x + 5) ** 2 + (y - 98 * s) ** 2 <= 9**2] = _TISSUE["spine"] * 0.7
    texture = 1 + 0.08 * _smooth_noise(rng, x.shape, cell)
    img = img * np.where(img > 0.2, texture, 1)
    volume = np.repeat(img[:, :, None], t.size, axis=2)
    liver_q = _ellipse_q(x, y, -70 + rng.normal(0, 6), -15, 95 * s, 70 * s, 0.4)
    liver_size = np.clip(1.6 * (t - 0.3), 0, 1)
    for k in np.nonzero(liver_size > 0)[0]:
        volume[:, :, k][liver_q <= liver_size[k] ** 2] = _TISSUE["liver"] * texture[liver_q <= liver_size[k] ** 2]
    return volume


def _heart_slice(
    x: np.ndarray,
    y: np.ndarray,
    *,
    endo: float,
    epi: float,
    rv_size: float,
    rv_angle: float,
    centre: tuple[float, float],
    harmonics: tuple[np.ndarray, np.ndarray, np.ndarray],
    papillary: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Label map and heart-tissue intensity (0 outside the heart) of one slice, on 2D grids in mm."""
    dx, dy = x - centre[0], y - centre[1]
    rho = np.sqrt(dx * dx + dy * dy) + 1e-6
    cos_t, sin_t = dx / rho, dy / rho
    basis = _angular_basis(cos_t, sin_t)
    r_endo = endo * _perturb(basis, harmonics[0])
    r_epi = epi * _perturb(basis, harmonics[1])
    lv = rho < r_endo
    inside_epi = rho < r_epi
    myo = inside_epi & ~lv
    label = np.zeros(x.shape, np.uint8)
    tissue = np.zeros(x.shape, np.float32)
    if rv_size > 0:
        # RV: an ellipse beside the LV, minus the LV epicardium, leaves a crescent around the septum.
        d = _RV_OFFSET[0] * epi + _RV_OFFSET[1] * rv_size
        ca, sa = np.cos(rv_angle), np.sin(rv_angle)
        u = dx * ca + dy * sa - d
        v = -dx * sa + dy * ca
        a, b = _RV_AXES[0] * rv_size, _RV_AXES[1] * rv_size * _perturb(basis, harmonics[2])
        rv = ((u / a) ** 2 + (v / b) ** 2 <= 1) & ~inside_epi
        rv_wall = ((u / (a + 3.0)) ** 2 + (v / (b + 3.0)) ** 2 <= 1) & ~rv & ~inside_epi
        label[rv] = 1
        tissue[rv_wall] = _TISSUE["myo"]
        tissue[rv] = _TISSUE["rv_blood"]
    if epi > 0:
        # Epicardial fat: a bright rim over part of the circumference, away from the RV.
        rim = (rho < r_epi + 3.0) & ~inside_epi & (label == 0) & (tissue == 0)
        rim &= cos_t * np.cos(rv_angle + 3.1) + sin_t * np.sin(rv_angle + 3.1) > 0.2
        tissue[rim] = _TISSUE["fat"] * 0.8
    label[myo] = 2
    label[lv] = 3
    tissue[myo] = _TISSUE["myo"]
    tissue[lv] = _TISSUE["lv_blood"]
    if endo > 8:
        # Two papillary muscles: myocardial intensity inside the cavity, labelled LV as in ACDC.
        for angle in (rv_angle + 2.3, rv_angle - 2.0):
            px, py = centre[0] + 0.68 * endo * np.cos(angle), centre[1] + 0.68 * endo * np.sin(angle)
            tissue[lv & ((x - px) ** 2 + (y - py) ** 2 < papillary**2)] = _TISSUE["myo"]
    return label, tissue


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
    long_ratio = 1 - 0.16 * ef  # long-axis shortening grows with function
    length_es = length * long_ratio
    radius_es = np.sqrt(edv * (1 - ef) / (2 / 3 * np.pi * length_es))
    rv_ef = float(np.clip(p["rvef"] + rng.normal(0, 0.05), 0.15, 0.75))

    shape = _SHAPES[rng.integers(len(_SHAPES))]
    s_xy = float(np.round(rng.uniform(1.2, 1.9), 4))
    dz = float(_SLICE_SPACINGS[rng.integers(len(_SLICE_SPACINGS))])
    top = length + dz * rng.uniform(0.3, 1.1)
    n_slices = int(np.clip(np.ceil((top + wall + 2) / dz) + 1, 6, 12))
    h = (top - dz * np.arange(n_slices)).astype(np.float32)

    def endo_ed_fn(hh: np.ndarray) -> np.ndarray:
        return _ellipsoid_profile(hh, radius, length)

    def epi_ed_fn(hh: np.ndarray) -> np.ndarray:  # the wall's half-ellipsoid, cut at the base plane
        return _ellipsoid_profile(hh + wall, radius + wall, length + wall) * (hh <= length)

    endo_ed, epi_ed = endo_ed_fn(h), epi_ed_fn(h)
    endo_es = _ellipsoid_profile(h, radius_es, length_es)
    epi_es = _es_radii(h, endo_ed_fn, epi_ed_fn, endo_es, long_ratio)
    # RV: a shorter half-ellipsoid profile whose size is solved for the group's RV volumes.
    rv_len = 0.85 * length
    rv_ed_profile = _ellipsoid_profile(h - (length - rv_len), 1.0, rv_len) * (h <= length + 4)
    rv_es_profile = _ellipsoid_profile(h - (length_es - rv_len * long_ratio), 1.0, rv_len * long_ratio)
    rv_es_profile = rv_es_profile * (h <= length_es + 4)
    rvedv = p["rvedv"] * rng.uniform(0.85, 1.15) * 1000.0
    rv_base = _solve_scale(lambda s: _rv_volume(s * rv_ed_profile, epi_ed, dz), rvedv, 150.0)
    rv_ed = rv_base * rv_ed_profile
    rvedv_drawn = _rv_volume(rv_ed, epi_ed, dz)
    rv_es = rv_es_profile * _solve_scale(lambda s: _rv_volume(s * rv_es_profile, epi_es, dz), rvedv_drawn * (1 - rv_ef), 150.0)

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
    harmonics = (_harmonics(rng, 0.10), _harmonics(rng, 0.07), _harmonics(rng, 0.12))
    rv_angle = np.pi + rng.normal(0, 0.2)
    papillary = rng.uniform(2.5, 4.0)
    es_shift = rng.normal(0, 1.5, 2)
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

    # The heart is drawn slice by slice in a window around its centre (the costly part of the phantom).
    extent = float(max(epi_ed.max(), epi_es.max()) + 1.8 * max(rv_ed.max(), 1.0) + 12.0)
    half = int(np.ceil(extent / s_xy))
    phases = {}
    for phase, (endo, epi, rv, shift) in enumerate(
        ((endo_ed, epi_ed, rv_ed, (0.0, 0.0)), (endo_es, epi_es, rv_es, tuple(es_shift)))
    ):
        image = background.copy()
        label = np.zeros(background.shape, np.uint8)
        for k in range(n_slices):
            if epi[k] <= 0 and rv[k] <= 0:
                continue
            cx = float(tilt[0] * (h[k] - length / 2) + shift[0])
            cy = float(tilt[1] * (h[k] - length / 2) + shift[1])
            ci = round((cr * cx - sr * cy + offset[0]) / s_xy + shape[0] / 2)
            cj = round((sr * cx + cr * cy + offset[1]) / s_xy + shape[1] / 2)
            win = (slice(max(ci - half, 0), max(ci + half, 0)), slice(max(cj - half, 0), max(cj + half, 0)))
            lab, tissue = _heart_slice(
                x[win], y[win], endo=float(endo[k]), epi=float(epi[k]), rv_size=float(rv[k]), rv_angle=rv_angle,
                centre=(cx, cy), harmonics=harmonics, papillary=papillary,
            )  # fmt: skip
            label[win + (k,)] = lab
            view = image[win + (k,)]
            image[win + (k,)] = np.where(tissue > 0, tissue * contrast, view)
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
        ed_label=phases[0][0],
        es_image=phases[1][1],
        es_label=phases[1][0],
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
