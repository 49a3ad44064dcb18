import math

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from featreg.reporting import feature_analysis as an
from featreg.reporting import feature_figures as ff
from featreg.encoders.features import build_encoder
from featreg.encoders.registry import EncoderSpec


@pytest.fixture(scope="module")
def mind():
    return build_encoder(EncoderSpec.from_dict("mind", {"kind": "mind", "grid": 16}))


def disc(n=32):
    x, y = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return ((x - 13) ** 2 + (y - 17) ** 2 < 49).astype(np.float32) * 0.8 + 0.1


def test_warp_image_mm_zero_field_and_whole_pixel_shift():
    img = torch.from_numpy(disc())[None, None]
    assert torch.allclose(an.warp_image_mm(img, torch.zeros(1, 2, 32, 32), (1.8, 1.8)), img, atol=1e-6)
    moved = an.warp_image_mm(img, an.translation_field((32, 32), 2 * 1.8, axis=0), (1.8, 1.8))
    torch.testing.assert_close(moved[0, 0, :-2], img[0, 0, 2:])  # M(x + 2 px)


def test_rotation_field_quarter_turn_maps_axes():
    u = an.rotation_field((5, 5), (1.0, 1.0), math.pi / 2)
    # pixel (4, 2) is at (+2, 0) mm from the centre; R(90°) sends it to (0, +2) = pixel (2, 4)
    assert torch.allclose(u[0, :, 4, 2], torch.tensor([-2.0, 2.0]))


def test_warp_features_matches_warp_image_for_a_field_on_the_grid():
    feats = torch.from_numpy(disc())[None, None]
    u = an.translation_field((32, 32), 4 * 1.8, axis=1)  # 4 image px = 4 cells when the grid equals the image
    torch.testing.assert_close(an.warp_features(feats, u, (1.8, 1.8))[..., :-4], feats[..., 4:])
    coarse = torch.nn.functional.interpolate(feats, size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(an.warp_features(coarse, u, (1.8, 1.8))[..., :-2], coarse[..., 2:])  # 4 px = 2 cells


def test_pca_recovers_a_rank_one_map():
    pattern = torch.from_numpy(disc(16))
    direction = torch.randn(8)
    feats = direction[:, None, None] * pattern + 3.0
    scores = an.pca_project(feats, an.pca_basis(feats, 3))
    corr = np.corrcoef(scores[0].ravel(), pattern.numpy().ravel())[0, 1]
    assert abs(corr) > 0.999 and np.abs(scores[1:]).max() < 1e-3


def test_normalise01_by_hand():
    assert torch.equal(an.normalise01(torch.tensor([[[[2.0, 4.0]]]])), torch.tensor([[[[0.0, 1.0]]]]))


def test_distance_curves_have_their_minimum_at_zero(mind):
    df = an.distance_curves(mind, disc(), (1.8, 1.8), rotation_step=math.pi / 8, translation_step_mm=7.2, translation_max_mm=14.4)
    rot, tr = df[df.motion == "rotation"], df[df.motion == "translation"]
    assert list(rot.amount.round(6)) == [-90.0, -67.5, -45.0, -22.5, 0.0, 22.5, 45.0, 67.5, 90.0]
    assert list(tr.amount.round(6)) == [-14.4, -7.2, 0.0, 7.2, 14.4]
    for part in (rot, tr):
        zero = part[part.amount.abs() < 1e-9].iloc[0]
        assert zero.cosine == pytest.approx(-1.0) and zero.l1 == pytest.approx(0.0, abs=1e-6)
        assert (part.cosine[part.amount.abs() > 1e-9] > zero.cosine + 1e-4).all()


def _is_png(path, min_width):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert mpimg.imread(path).shape[1] >= min_width


def test_figures_are_written(mind, tmp_path):
    img = disc()
    f = mind(torch.from_numpy(img)[None, None])
    _is_png(ff.plot_pca(img, {"mind": f, "mind again": f}, tmp_path / "pca.png"), 500)
    df = an.distance_curves(mind, img, (1.8, 1.8), rotation_step=math.pi / 4, translation_step_mm=14.4, translation_max_mm=28.8)
    _is_png(ff.plot_distance_curves({"mind": df}, tmp_path / "curves.png"), 500)
    field = an.rotation_field((32, 32), (1.8, 1.8), 0.2)[0].numpy()
    result = an.commutativity(mind, img, field, (1.8, 1.8))
    assert result["difference"].shape == (16, 16) and result["difference"].max() > 0
    _is_png(ff.plot_commutativity({"mind": result}, tmp_path / "comm.png"), 500)
