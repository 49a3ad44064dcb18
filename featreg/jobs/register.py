"""The register job: register every pair of a shard with one method, batch by batch, and write the results.

An FFD method reads as: check the arguments, open the shard's cached features (and the
encoder, when it encodes every iteration), then per batch :func:`load_batch`, :func:`~featreg.registration.optimize.register_pairs`
and write. An elastix method registers one pair at a time on the CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from featreg.data.pairs import Pair, load_pair, pair_name
from featreg.devices import resolve_device
from featreg.encoders.cache import CacheError, cache_pair_features, load_features
from featreg.encoders.feature_manifest import read_feature_manifest
from featreg.encoders.features import FeatureEncoder, build_encoder
from featreg.encoders.registry import EncoderSpec
from featreg.errors import FeatregError, InputError, first_line
from featreg.experiment.methods import ONCE, Method
from featreg.jobs.resume import Statuses, fail_pair, fingerprint, ok, pending_pairs, unreadable_reason, write_register_manifest
from featreg.registration.batching import auto_batch_size
from featreg.registration.elastix import ElastixSettings, register_elastix
from featreg.registration.io import write_elastix_result, write_pair_result
from featreg.registration.optimize import register_pairs
from featreg.registration.settings import RegistrationSettings

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """Pairs loaded for one call of the optimiser: their folders, pairs, result fingerprints and cached
    features of the fixed and (encoding once) moving images."""

    dirs: list[Path] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)
    keys: list[str | None] = field(default_factory=list)
    fixed: list[torch.Tensor] = field(default_factory=list)
    moving: list[torch.Tensor] = field(default_factory=list)


class ShardFeatures:
    """A feature method's cached features of the shard, and its encoder.

    Encoding every iteration, the encoder is built when the job starts. Encoding once, it is
    built only if a cache file must be rebuilt: the loop never calls it, and the fingerprint
    uses the identity the features job recorded.
    """

    def __init__(self, features_manifest: Path, device: torch.device, *, once: bool, compile_encoder: bool):
        self.manifest = features_manifest
        self.record = read_feature_manifest(features_manifest)
        self.once = once
        self.images = ("fixed", "moving") if once else ("fixed",)
        self.files = {"fixed": self.record.features, "moving": self.record.moving}
        splits, weights = self.record.layer_splits, self.record.layer_weights
        self.layers = None if splits is None else (splits, weights)
        self._device, self._compile = device, compile_encoder
        self._encoder: FeatureEncoder | None = None
        if not once:
            self.encoder()
        self.identity = dict(self.record.identity) if once else self._encoder.identity()
        if once and not self.record.moving:
            raise FeatregError(f"{features_manifest} lists no moving-image features: the features job of encoder "
                               f"{self.record.spec.name} must run with --moving for a method that encodes once")

    def encoder(self) -> FeatureEncoder:
        """The encoder, built on first use."""
        if self._encoder is None:
            self._encoder = build_encoder(self.record.spec, device=str(self._device))
            if self._compile:
                self._encoder.backbone.compile()
        return self._encoder

    @property
    def loop_encoder(self) -> FeatureEncoder | None:
        """What the optimiser gets: the encoder when it encodes every iteration, else None."""
        return None if self.once else self._encoder

    def encode_seconds(self, pair_dir: Path) -> float:
        """Seconds the features job spent encoding this pair's images that the method uses."""
        spent = self.record.encode_seconds.get(pair_name(pair_dir), {})
        return float(sum(spent.get(image, float("nan")) for image in self.images))

    def load(self, pair_dir: Path, image: str) -> torch.Tensor | str:
        """A pair's cached features of ``image``, rebuilt once when unusable; else why they are missing."""
        name = pair_name(pair_dir)
        if name not in self.files[image]:
            return f"no cached {image}-image features in {self.manifest}"
        path = self.files[image][name]
        try:
            return load_features(path, self.identity, image=image)
        except CacheError as exc:  # unusable cache (truncated, stale): rebuild it with the encoder
            cache_pair_features(self.record.spec, [pair_dir], [path], image=image, encoder=self.encoder())
            try:
                features = load_features(path, self.identity, image=image)
            except CacheError as again:
                return f"{exc}; rebuilding failed: {again}"
            log.warning("%s; rebuilt", exc)
            return features


def load_batch(pending: Sequence[tuple[Path, str | None]], features: ShardFeatures | None,
               fail: Callable[[Path, str, str | None], None]) -> Batch:
    """Load the pending pairs of one batch; a pair that cannot join it is failed with its reason.

    A pair fails when it cannot be read, when its spacing differs from the batch's (one
    batch shares one spacing: the mm field and the physical regulariser use it) or when
    its cached features are missing; an unusable cache (truncated, stale) is rebuilt first.
    """
    batch = Batch()
    for pair_dir, key in pending:
        try:
            pair = load_pair(pair_dir)
        except InputError as exc:
            fail(pair_dir, unreadable_reason(pair_dir, exc), key)
            continue
        if batch.pairs and not np.allclose(pair.spacing, batch.pairs[0].spacing):
            fail(pair_dir, f"spacing {pair.spacing} mm differs from the batch's {batch.pairs[0].spacing} mm", key)
            continue
        loaded = {image: features.load(pair_dir, image) for image in features.images} if features else {}
        missing = [reason for reason in loaded.values() if isinstance(reason, str)]
        if missing:
            fail(pair_dir, "; ".join(missing), key)
            continue
        for image, tensor in loaded.items():
            getattr(batch, image).append(tensor)
        batch.dirs.append(pair_dir)
        batch.pairs.append(pair)
        batch.keys.append(key)
    return batch


def _auto_batch_size(pending: Sequence[tuple[Path, str | None]], settings, features: ShardFeatures | None,
                     device) -> tuple[int, dict[str, Any]]:
    """``batch_size: auto`` measured on the first readable pending pair, with its cached features as the loop gets them."""
    for pair_dir, _ in pending:
        try:
            pair = load_pair(pair_dir)
        except InputError:
            continue  # reported as failed by the registration loop
        loaded = {image: features.load(pair_dir, image) for image in features.images} if features else {}
        if any(isinstance(reason, str) for reason in loaded.values()):
            continue  # its features are missing: failed by the registration loop
        return auto_batch_size(pair.fixed[None, None], pair.moving[None, None], settings, spacing=pair.spacing,
                               encoder=features and features.loop_encoder, device=device, limit=len(pending),
                               fixed_features=loaded.get("fixed"), moving_features=loaded.get("moving"))  # fmt: skip
    return 1, {"requested": "auto", "batch_size": 1, "rule": "no readable pair to measure"}


def register_shard(
    method: Method,
    pair_dirs: Sequence[str | Path],
    out_dir: str | Path,
    manifest: str | Path,
    *,
    encoder_spec: EncoderSpec | None = None,
    features_manifest: str | Path | None = None,
    device: str = "auto",
    batch_size: int | str = 8,
    threads: int = 1,
    compile_encoder: bool = False,
) -> Path:
    """Register every pair of a shard with ``method``, batch by batch; write results and the manifest.

    ``batch_size`` ``"auto"`` is chosen from the first readable pending pair
    (:mod:`featreg.registration.batching`); ``compile_encoder`` wraps the
    encoder's backbone in ``torch.compile``. An elastix method registers one pair
    at a time on the CPU with ``threads`` threads (``device``, ``batch_size`` and
    ``compile_encoder`` are the FFD's). ``pair_dirs`` are the patients' folders; each slice
    pair of a patient is a pair like any other (:func:`featreg.data.pairs.expand_pairs`);
    results go to ``out_dir/<pair name>/``.
    """
    if method.kind == "elastix":
        return _register_shard_elastix(method, pair_dirs, Path(out_dir), manifest, threads=threads)
    _check_arguments(method, encoder_spec, features_manifest, batch_size)
    settings = RegistrationSettings.from_dict(method.registration_settings())
    torch_device = resolve_device(device)
    out_dir = Path(out_dir)
    features = None
    if encoder_spec is not None:
        features = ShardFeatures(Path(features_manifest), torch_device, once=settings.encode == ONCE,
                                 compile_encoder=compile_encoder)
    expected = fingerprint(method, features.identity if features else None)

    statuses: Statuses = {}
    pending = pending_pairs(pair_dirs, out_dir, expected, statuses)
    log.info("method %s: %d pairs, %d already done, %d to register on %s", method.name, len(statuses) + len(pending),
             len(statuses), len(pending), torch_device)
    batch_sizing = None
    if batch_size == "auto" and pending:
        batch_size, batch_sizing = _auto_batch_size(pending, settings, features, torch_device)
    progress = tqdm(total=len(pending), desc=f"register {method.name}", unit="pair")

    def fail(pair_dir: Path, reason: str, key: str | None) -> None:
        fail_pair(out_dir, method.name, statuses, progress, pair_dir, reason, key)

    for start in range(0, len(pending), batch_size):
        batch = load_batch(pending[start : start + batch_size], features, fail)
        if not batch.pairs:
            continue
        result = register_pairs(
            np.stack([p.fixed for p in batch.pairs])[:, None],
            np.stack([p.moving for p in batch.pairs])[:, None],
            settings,
            spacing=batch.pairs[0].spacing,
            encoder=features and features.loop_encoder,
            fixed_features=torch.cat(batch.fixed) if batch.fixed else None,
            moving_features=torch.cat(batch.moving) if batch.moving else None,
            layers=features and features.layers,
            device=torch_device,
        )
        for index, (pair_dir, pair, key) in enumerate(zip(batch.dirs, batch.pairs, batch.keys)):
            write_pair_result(out_dir / pair_name(pair_dir), result, index, patient=pair.patient, method=method.name,
                              spacing=pair.spacing, moving_label=pair.moving_label, fingerprint=key,
                              batch_sizing=batch_sizing,
                              encode_seconds=features.encode_seconds(pair_dir) if features else None)
            statuses[pair_name(pair_dir)] = {"status": result.status[index], "reason": result.reason[index]}
            progress.update()
    progress.close()
    return write_register_manifest(method.name, expected, statuses, manifest)


def _check_arguments(method: Method, encoder_spec: EncoderSpec | None, features_manifest: str | Path | None,
                     batch_size: int | str) -> None:
    """An FFD register job's arguments agree with its method, before anything is loaded."""
    if batch_size != "auto" and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise FeatregError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
    if (method.encoder is None) != (encoder_spec is None):
        raise FeatregError(f"method {method.name} uses encoder {method.encoder} but the encoder spec given is {encoder_spec}")
    if encoder_spec is not None and features_manifest is None:
        raise FeatregError(f"method {method.name} uses encoder {encoder_spec.name} but no feature manifest was given")


def _register_shard_elastix(method: Method, pair_dirs: Sequence[str | Path], out_dir: Path, manifest: str | Path, *,
                            threads: int) -> Path:
    """Register every pair of a shard with elastix, one pair at a time; write results and the manifest.

    elastix stopping with an error (e.g. too few samples inside the moving image)
    fails that pair with elastix's message; the others go on.
    """
    if threads < 1:
        raise FeatregError(f"threads must be at least 1, got {threads}")
    settings = ElastixSettings.from_dict(method.settings)
    expected = fingerprint(method, None)
    statuses: Statuses = {}
    pending = pending_pairs(pair_dirs, out_dir, expected, statuses)
    log.info("method %s (elastix): %d pairs, %d already done, %d to register with %d thread(s)", method.name,
             len(statuses) + len(pending), len(statuses), len(pending), threads)
    progress = tqdm(total=len(pending), desc=f"register {method.name}", unit="pair")
    for pair_dir, key in pending:
        name = pair_name(pair_dir)
        try:
            pair = load_pair(pair_dir)
        except InputError as exc:
            fail_pair(out_dir, method.name, statuses, progress, pair_dir, unreadable_reason(pair_dir, exc), key)
            continue
        try:
            result = register_elastix(pair.fixed, pair.moving, pair.spacing, settings, threads=threads)
        except RuntimeError as exc:  # itk raises its exceptions as RuntimeError
            fail_pair(out_dir, method.name, statuses, progress, pair_dir, f"elastix failed: {first_line(exc)}", key)
            continue
        if not np.isfinite(result.displacement_mm).all():
            fail_pair(out_dir, method.name, statuses, progress, pair_dir, "elastix returned a non-finite displacement", key)
            continue
        write_elastix_result(out_dir / name, result, settings, patient=pair.patient, method=method.name,
                             spacing=pair.spacing, moving_label=pair.moving_label, threads=threads, fingerprint=key)
        statuses[name] = ok()
        progress.update()
    progress.close()
    return write_register_manifest(method.name, expected, statuses, manifest)

