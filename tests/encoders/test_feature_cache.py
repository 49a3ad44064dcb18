import numpy as np
import pytest
import torch

from featreg.cli import main
from featreg.data.nifti import write_nifti
from featreg.encoders.cache import (
    CorruptCacheError,
    MissingCacheError,
    StaleCacheError,
    cache_pair_features,
    compute_features,
    load_features,
    save_features,
)
from featreg.encoders.features import build_encoder
from featreg.encoders.registry import EncoderSpec
from featreg.errors import FeatregError

IDENTITY = {"kind": "mind", "name": "mind", "weights": "none", "grid": 16}


def test_round_trip(tmp_path):
    f = torch.randn(1, 12, 16, 16)
    path = save_features(tmp_path / "f.pt", f, IDENTITY)
    assert torch.equal(load_features(path, IDENTITY), f)


def test_stale_names_file_and_field(tmp_path):
    path = save_features(tmp_path / "f.pt", torch.zeros(2, 3), IDENTITY)
    with pytest.raises(StaleCacheError, match=f"feature cache {path} was written by a different encoder \\(differs in: grid\\)"):
        load_features(path, {**IDENTITY, "grid": 64})


def test_corrupt_bytes_and_tampered_tensor(tmp_path):
    path = save_features(tmp_path / "f.pt", torch.ones(4, 4), IDENTITY)
    record = torch.load(path, weights_only=True)
    record["features"][0, 0] = 2.0
    torch.save(record, tmp_path / "t.pt")
    with pytest.raises(CorruptCacheError, match="t.pt: tensor bytes fail their sha256"):
        load_features(tmp_path / "t.pt", IDENTITY)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptCacheError, match=f"feature cache {path} is unreadable"):
        load_features(path, IDENTITY)
    with pytest.raises(MissingCacheError):
        load_features(tmp_path / "none.pt", IDENTITY)
    assert issubclass(CorruptCacheError, FeatregError)


def _pair(root, name, seed):
    img = np.random.default_rng(seed).random((32, 32)).astype(np.float32)
    write_nifti(root / name / "fixed_image.nii.gz", img, (1.8, 1.8))
    write_nifti(root / name / "moving_image.nii.gz", np.roll(img, 3, axis=0), (1.8, 1.8))
    return root / name, img


def test_cache_fixed_features_writes_reuses_and_rebuilds(tmp_path):
    spec = EncoderSpec.from_dict("mind", {"kind": "mind", "grid": 16})
    encoder = build_encoder(spec)
    (p1, img1), (p2, _) = _pair(tmp_path, "patient001", 1), _pair(tmp_path, "patient002", 2)
    outs = [tmp_path / "f" / "patient001.pt", tmp_path / "f" / "patient002.pt"]
    cache_pair_features(spec, [p1, p2], outs, encoder=encoder)
    expected = compute_features(encoder, torch.from_numpy(img1)[None, None])
    assert expected.shape == (1, 12, 16, 16)
    torch.testing.assert_close(load_features(outs[0], encoder.identity()), expected)
    mtime = outs[0].stat().st_mtime_ns
    outs[1].write_bytes(b"garbage")
    cache_pair_features(spec, [p1, p2], outs, encoder=encoder)
    assert outs[0].stat().st_mtime_ns == mtime  # current cache kept
    assert load_features(outs[1], encoder.identity()).shape == (1, 12, 16, 16)  # corrupt one rebuilt


def test_moving_features_are_cached_beside_the_fixed_ones_and_never_taken_for_them(tmp_path):
    spec = EncoderSpec.from_dict("mind", {"kind": "mind", "grid": 16})
    encoder = build_encoder(spec)
    identity = encoder.identity()
    pair, img = _pair(tmp_path, "patient001", 1)
    fixed_out, moving_out = tmp_path / "f" / "fixed.pt", tmp_path / "f" / "moving.pt"
    cache_pair_features(spec, [pair], [fixed_out], encoder=encoder)
    assert cache_pair_features(spec, [pair], [moving_out], image="moving", encoder=encoder) == {pair: moving_out}
    expected = compute_features(encoder, torch.from_numpy(np.roll(img, 3, axis=0))[None, None])
    torch.testing.assert_close(load_features(moving_out, identity, image="moving"), expected)
    with pytest.raises(StaleCacheError, match=f"feature cache {moving_out} holds the moving image's features, not the fixed image's"):
        load_features(moving_out, identity)  # what a fixed-feature reader (shards.py) asks for
    with pytest.raises(StaleCacheError, match="holds the fixed image's features, not the moving image's"):
        load_features(fixed_out, identity, image="moving")
    # Stale (another encoder's) and corrupt files are rebuilt; a current one is kept
    save_features(moving_out, torch.zeros(1, 12, 8, 8), {**identity, "grid": 8}, image="moving")
    cache_pair_features(spec, [pair], [moving_out], image="moving", encoder=encoder)
    torch.testing.assert_close(load_features(moving_out, identity, image="moving"), expected)
    moving_out.write_bytes(moving_out.read_bytes()[:200])
    cache_pair_features(spec, [pair], [moving_out], image="moving", encoder=encoder)
    torch.testing.assert_close(load_features(moving_out, identity, image="moving"), expected)
    mtime = moving_out.stat().st_mtime_ns
    cache_pair_features(spec, [pair], [moving_out], image="moving", encoder=encoder)
    assert moving_out.stat().st_mtime_ns == mtime
    # A fixed-image file at the moving path is rebuilt too
    fixed_out.replace(moving_out)
    cache_pair_features(spec, [pair], [moving_out], image="moving", encoder=encoder)
    torch.testing.assert_close(load_features(moving_out, identity, image="moving"), expected)
    with pytest.raises(ValueError, match=r"image must be one of \['fixed', 'moving'\], got 'warped'"):
        cache_pair_features(spec, [pair], [moving_out], image="warped", encoder=encoder)


def test_a_cache_written_before_moving_images_were_cached_reads_as_fixed(tmp_path):
    path = save_features(tmp_path / "f.pt", torch.ones(1, 2, 4, 4), IDENTITY)
    record = torch.load(path, weights_only=True)
    del record["image"]
    torch.save(record, path)
    assert torch.equal(load_features(path, IDENTITY), torch.ones(1, 2, 4, 4))
    with pytest.raises(StaleCacheError, match="holds the fixed image's features"):
        load_features(path, IDENTITY, image="moving")


def test_cache_fixed_features_leaves_out_an_unreadable_pair(tmp_path):
    spec = EncoderSpec.from_dict("mind", {"kind": "mind", "grid": 8})
    (good, _), (bad, _) = _pair(tmp_path, "patient001", 1), _pair(tmp_path, "patient002", 2)
    (bad / "fixed_image.nii.gz").write_bytes(b"not a nifti")
    outs = [tmp_path / "f" / "patient001.pt", tmp_path / "f" / "patient002.pt"]
    written = cache_pair_features(spec, [good, bad], outs)
    assert written == {good: outs[0]}
    assert outs[0].is_file() and not outs[1].exists()


def test_features_cli(tmp_path, capsys):
    pair, _ = _pair(tmp_path, "patient003", 3)
    config = tmp_path / "enc.yaml"
    config.write_text("encoders:\n  mind: {kind: mind, grid: 8}\n")
    out = tmp_path / "cache"
    assert main(["features", "--encoders", str(config), "--encoder", "mind", "--pairs", str(pair), "--out-dir", str(out)]) == 0
    assert torch.load(out / "patient003.pt", weights_only=True)["features"].shape == (1, 12, 8, 8)
    assert main(["features", "--encoders", str(config), "--encoder", "dino", "--pairs", str(pair), "--out-dir", str(out)]) == 2
    assert "encoder(s) dino not in" in capsys.readouterr().err
