"""Fixed-image feature cache: the fixed image is encoded once per pair, then reused every iteration.

A cache file is ``torch.save`` of ``{"format", "features", "shape", "dtype",
"sha256", "identity"}``; ``identity`` is ``FeatureEncoder.identity()`` and
``sha256`` hashes the tensor's bytes. Loading checks both, so a file from
another encoder (stale) or a damaged file (corrupt) is never used silently.
"""

from __future__ import annotations

import hashlib
import logging
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


class CacheError(FeatregError):
    """A feature cache cannot be used; rebuild it."""


class MissingCacheError(CacheError):
    """The cache file does not exist."""


class StaleCacheError(CacheError):
    """The cache was written by a different encoder (identity differs)."""


class CorruptCacheError(CacheError):
    """The cache file is unreadable, malformed or fails its hash."""


def tensor_sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def save_features(path: str | Path, features: torch.Tensor, identity: dict[str, Any]) -> Path:
    """Write ``features`` (any shape, stored on the CPU) with the encoder ``identity``, atomically."""
    path = Path(path)
    features = features.detach().cpu().contiguous()
    record = {
        "format": FORMAT,
        "features": features,
        "shape": list(features.shape),
        "dtype": str(features.dtype),
        "sha256": tensor_sha256(features),
        "identity": identity,
    }
    with atomic_path(path) as tmp:
        torch.save(record, tmp)
    return path


def load_features(path: str | Path, identity: dict[str, Any]) -> torch.Tensor:
    """Read a cache written by ``save_features`` for the encoder ``identity``.

    Raises ``MissingCacheError``, ``CorruptCacheError`` or ``StaleCacheError``,
    each naming the file.
    """
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
    return features


@torch.no_grad()
def compute_fixed_features(encoder: FeatureEncoder, images: torch.Tensor, *, batch_size: int = 8) -> torch.Tensor:
    """Encode ``(B, 1, X, Y)`` images without gradients, in batches; ``(B, C, g, g)`` float32 on the CPU."""
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected an image batch of shape (B, 1, X, Y), got {tuple(images.shape)}")
    chunks = [encoder(images[i : i + batch_size]).cpu() for i in range(0, images.shape[0], batch_size)]
    return torch.cat(chunks)


def cache_fixed_features(
    spec: EncoderSpec,
    pair_dirs: Sequence[str | Path],
    out_paths: Sequence[str | Path],
    device: str = "cpu",
    *,
    encoder: FeatureEncoder | None = None,
) -> dict[Path, Path]:
    """Encode ``<pair>/fixed_image.nii.gz`` of each pair into the matching ``out_paths`` file, ``(1, C, g, g)``.

    A file that already holds valid features for this encoder is kept; a
    missing, stale or corrupt one is (re)written. The encoder is built once.
    A pair whose fixed image cannot be read is logged and left out, so one bad
    pair does not stop the others. Returns pair folder -> feature file.
    """
    if len(pair_dirs) != len(out_paths):
        raise ValueError(f"got {len(pair_dirs)} pair folders but {len(out_paths)} output paths")
    encoder = encoder if encoder is not None else build_encoder(spec, device)
    identity = encoder.identity()
    written: dict[Path, Path] = {}
    for pair, out in tqdm(list(zip(map(Path, pair_dirs), map(Path, out_paths))), desc=f"features {spec.name}", unit="pair"):
        try:
            load_features(out, identity)
            log.info("%s: cached features are current", out)
            written[pair] = out
            continue
        except CacheError as exc:
            log.info("%s: rebuilding (%s)", out, exc)
        try:
            image, _ = read_nifti(pair / "fixed_image.nii.gz", patient=pair.name)
        except InputError as exc:
            log.error("%s: no features (%s)", pair.name, exc)
            continue
        if image.ndim != 2:
            log.error("%s: no features (expected a 2D fixed image, got shape %s)", pair.name, image.shape)
            continue
        tensor = torch.as_tensor(image, dtype=torch.float32)[None, None]
        written[pair] = save_features(out, compute_fixed_features(encoder, tensor), identity)
    return written
