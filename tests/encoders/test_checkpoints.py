import hashlib
import re

import pytest

from featreg.encoders import checkpoints as ck
from featreg.encoders.checkpoints import CheckpointEntry, CheckpointError, fetch_checkpoint, verify_checkpoint

PAYLOAD = b"not really a checkpoint" * 1000


def entry_for(payload, **changes):
    fields = dict(
        name="toy",
        filename="toy.pth",
        url=None,
        source="https://example.org/toy",
        size=len(payload),
        sha256=hashlib.sha256(payload).hexdigest(),
        md5_prefix=hashlib.md5(payload).hexdigest()[:6],
    )
    return CheckpointEntry(**{**fields, **changes})


def test_verify_accepts_the_right_file(tmp_path):
    path = tmp_path / "toy.pth"
    path.write_bytes(PAYLOAD)
    assert verify_checkpoint(path, entry_for(PAYLOAD)) == hashlib.sha256(PAYLOAD).hexdigest()


def test_size_and_hash_mismatch_name_file_expectation_and_source(tmp_path):
    path = tmp_path / "toy.pth"
    path.write_bytes(PAYLOAD[:-1])
    entry = entry_for(PAYLOAD)
    with pytest.raises(CheckpointError) as info:
        verify_checkpoint(path, entry)
    text = str(info.value)
    assert text.startswith(f"checkpoint {path} is corrupt or not the expected file: size 22,999 bytes != expected 23,000")
    assert f"sha256 {hashlib.sha256(PAYLOAD[:-1]).hexdigest()} != expected {entry.sha256}" in text
    assert f"md5 starting {entry.md5_prefix}" in text and text.endswith("get it from https://example.org/toy")


def test_pinned_sha256_without_table_entry(tmp_path):
    path = tmp_path / "medsam_custom.pth"
    path.write_bytes(PAYLOAD)
    with pytest.raises(CheckpointError, match=re.escape("!= expected " + "0" * 64)):
        verify_checkpoint(path, None, sha256="0" * 64)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"sam_vit_b_01ec64.pth is missing \(expected md5 starting 01ec64, 375,042,383 bytes\)"):
        verify_checkpoint(tmp_path / "sam_vit_b_01ec64.pth", ck.CHECKPOINTS["sam_vit_b"])


def test_fetch_from_a_file_url_verifies_and_renames(tmp_path, monkeypatch):
    source = tmp_path / "remote.bin"
    source.write_bytes(PAYLOAD)
    monkeypatch.setitem(ck.CHECKPOINTS, "toy", entry_for(PAYLOAD, url=source.as_uri()))
    out = fetch_checkpoint("toy", tmp_path / "dest")
    assert out == tmp_path / "dest" / "toy.pth" and out.read_bytes() == PAYLOAD
    assert sorted(p.name for p in out.parent.iterdir()) == ["toy.pth"]


def test_fetch_of_a_corrupt_download_leaves_nothing(tmp_path, monkeypatch):
    source = tmp_path / "remote.bin"
    source.write_bytes(PAYLOAD + b"x")
    monkeypatch.setitem(ck.CHECKPOINTS, "toy", entry_for(PAYLOAD, url=source.as_uri()))
    with pytest.raises(CheckpointError, match="failed verification"):
        fetch_checkpoint("toy", tmp_path / "dest")
    assert list((tmp_path / "dest").iterdir()) == []


def test_medsam_has_no_direct_download(tmp_path):
    with pytest.raises(CheckpointError, match="no direct download; get medsam_vit_b.pth from the Google Drive folder"):
        fetch_checkpoint("medsam_vit_b", tmp_path)
