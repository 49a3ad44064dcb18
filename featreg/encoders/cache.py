"""Pair feature cache: a pair's fixed image (and, for ``encode: once``, its moving image) encoded once, then reused.

A cache file is ``torch.save`` of ``{"format", "features", "shape", "dtype",
"sha256", "identity", "image", "seconds"}``; ``identity`` is ``FeatureEncoder.identity()``,
``image`` which of the pair's images was encoded (``fixed`` or ``moving``; files
written before moving images were cached hold the fixed image's and have none) and
``sha256`` hashes the tensor's bytes. Loading checks all three, so a file from another
encoder or of the other image (stale) or a damaged file (corrupt) is never used silently.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from featreg.data.nifti import read_nifti
from featreg.io import atomic_path
from featreg.encoders.features import FeatureEncoder, build_encoder
from featreg.encoders.registry import EncoderSpec
from featreg.errors import FeatregError, InputError

log = logging.getLogger(__name__)

FORMAT = 1
IMAGES = ("fixed", "moving")
"""The pair's images a cache can hold, each read from ``<pair>/<image>_image.nii.gz``."""


class CacheError(FeatregError):
    """A feature cache cannot be used; rebuild it."""


class MissingCacheError(CacheError):
    """The cache file does not exist."""


class StaleCacheError(CacheError):
    """The cache was written by a different encoder (identity differs) or holds the pair's other image."""


class CorruptCacheError(CacheError):
    """The cache file is unreadable, malformed or fails its hash."""


def tensor_sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def _check_image(image: str) -> None:
    if image not in IMAGES:
        raise ValueError(f"image must be one of {list(IMAGES)}, got {image!r}")


def save_features(path: str | Path, features: torch.Tensor, identity: dict[str, Any], *, image: str = "fixed",
                  seconds: float = float("nan")) -> Path:
    """Write ``features`` (any shape, stored on the CPU) of the pair's ``image`` with the encoder ``identity``, atomically;
    ``seconds`` is what encoding the image took (the cost the report shows)."""
    _check_image(image)
    path = Path(path)
    features = features.detach().cpu().contiguous()
    record = {
        "format": FORMAT,
        "features": features,
        "shape": list(features.shape),
        "dtype": str(features.dtype),
        "sha256": tensor_sha256(features),
        "identity": identity,
        "image": image,
        "seconds": float(seconds),
    }
    with atomic_path(path) as tmp:
        torch.save(record, tmp)
    return path


def load_features(path: str | Path, identity: dict[str, Any], *, image: str = "fixed") -> torch.Tensor:
    """Read a cache written by ``save_features`` for the encoder ``identity`` and the pair's ``image``.

    Raises ``MissingCacheError``, ``CorruptCacheError`` or ``StaleCacheError``,
    each naming the file.
    """
    _check_image(image)
    path = Path(path)
    if not path.is_file():
        raise MissingCacheError(f"feature cache {path} does not exist")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip raise many types for damaged files
        raise CorruptCacheError(f"feature cache {path} is unreadable ({exc.__class__.__name__}: {exc})") from exc
    keys = {"format", "features", "shape", "dtype", "sha256", "identity"}
    if not isinstance(record, dict) or not keys <= set(record) or not isinstance(record["features"], torch.Tensor):
        raise CorruptCacheError(f"feature cache {path} is not a featreg feature cache")
    if record["format"] != FORMAT:
        raise StaleCacheError(f"feature cache {path} has format {record['format']}, expected {FORMAT}")
    features = record["features"]
    if list(features.shape) != list(record["shape"]) or str(features.dtype) != record["dtype"]:
        raise CorruptCacheError(
            f"feature cache {path}: tensor is {tuple(features.shape)} {features.dtype}, "
            f"header says {tuple(record['shape'])} {record['dtype']}"
        )
    if tensor_sha256(features) != record["sha256"]:
        raise CorruptCacheError(f"feature cache {path}: tensor bytes fail their sha256")
    if record["identity"] != identity:
        differ = sorted(k for k in set(identity) | set(record["identity"]) if identity.get(k) != record["identity"].get(k))
        raise StaleCacheError(f"feature cache {path} was written by a different encoder (differs in: {', '.join(differ)})")
    held = record.get("image", "fixed")
    if held != image:
        raise StaleCacheError(f"feature cache {path} holds the {held} image's features, not the {image} image's")
    return features


@torch.no_grad()
def compute_features(encoder: FeatureEncoder, images: torch.Tensor, *, batch_size: int = 8) -> torch.Tensor:
    """Encode ``(B, 1, X, Y)`` images without gradients, in batches; ``(B, C, g, g)`` float32 on the CPU."""
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected an image batch of shape (B, 1, X, Y), got {tuple(images.shape)}")
    chunks = [encoder(images[i : i + batch_size]).cpu() for i in range(0, images.shape[0], batch_size)]
    return torch.cat(chunks)


def cache_pair_features(
    spec: EncoderSpec,
    pair_dirs: Sequence[str | Path],
    out_paths: Sequence[str | Path],
    device: str = "cpu",
    *,
    image: str = "fixed",
    encoder: FeatureEncoder | None = None,
) -> dict[Path, Path]:
    """Encode ``<pair>/<image>_image.nii.gz`` of each pair into the matching ``out_paths`` file, ``(1, C, g, g)``.

    A file that already holds valid features of this image for this encoder is kept; a
    missing, stale or corrupt one is (re)written. The encoder is built once. A pair whose
    image cannot be read is logged and left out, so one bad pair does not stop the
    others. Returns pair folder -> feature file.
    """
    _check_image(image)
    if len(pair_dirs) != len(out_paths):
        raise ValueError(f"got {len(pair_dirs)} pair folders but {len(out_paths)} output paths")
    encoder = encoder if encoder is not None else build_encoder(spec, device)
    identity = encoder.identity()
    written: dict[Path, Path] = {}
    for pair, out in tqdm(list(zip(map(Path, pair_dirs), map(Path, out_paths))), desc=f"{image} features {spec.name}", unit="pair"):
        try:
            load_features(out, identity, image=image)
            log.info("%s: cached features are current", out)
            written[pair] = out
            continue
        except CacheError as exc:
            log.info("%s: rebuilding (%s)", out, exc)
        try:
            array, _ = read_nifti(pair / f"{image}_image.nii.gz", patient=pair.name)
        except InputError as exc:
            log.error("%s: no features (%s)", pair.name, exc)
            continue
        if array.ndim != 2:
            log.error("%s: no features (expected a 2D %s image, got shape %s)", pair.name, image, array.shape)
            continue
        tensor = torch.as_tensor(array, dtype=torch.float32)[None, None]
        start = time.perf_counter()
        features = compute_features(encoder, tensor)
        written[pair] = save_features(out, features, identity, image=image, seconds=time.perf_counter() - start)
    return written


def encoding_seconds(path: str | Path) -> float:
    """The seconds encoding a cache file's image took (NaN for a file written before they were recorded)."""
    record = torch.load(Path(path), map_location="cpu", weights_only=True)
    return float(record.get("seconds", float("nan")))

