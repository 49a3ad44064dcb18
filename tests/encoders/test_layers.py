"""Layer selection on every kind with learnt weights, the layered distance, and the vgg16 kind's shipped weights."""

import re

import pytest
import torch

from featreg.encoders.features import FeatureEncoder, build_encoder, selectable_layers
from featreg.registration.losses import layered_distance
from featreg.encoders.registry import EncoderSpec, kind_factory, layer_count
from featreg.errors import ConfigError
from featreg.registration.losses import FEATURE_DISTANCES

# Tiny random-weight builds of each kind (as tests/encoders/test_models.py); litemedsam takes 256 px only.
TINY = {
    "dinov2": {"kind": "dinov2", "input_size": 56, "grid": 8, "arch": {"embed_dim": 48, "depth": 3, "num_heads": 3}},
    "sam": {
        "kind": "sam",
        "input_size": 64,
        "grid": 8,
        "arch": {"embed_dim": 48, "depth": 3, "num_heads": 3, "window_size": 2, "global_attn_indexes": [2], "out_chans": 32},
    },
    "timm": {"kind": "timm", "model": "resnet18", "input_size": 64, "grid": 8},
    "litemedsam": {"kind": "litemedsam", "grid": 16},
    "vgg16": {"kind": "vgg16", "input_size": 48, "grid": 12},
}


def spec(kind, **extra):
    return EncoderSpec.from_dict(f"tiny-{kind}", {**TINY[kind], "random_init": True, **extra})


@pytest.fixture(scope="module")
def backbones():
    """One random-weight backbone per kind, shared by encoders of different layer selections."""
    return {kind: kind_factory(spec(kind))(spec(kind)) for kind in TINY}


def image(seed, size=40):
    return torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(seed))


def close(actual, expected, rel=1e-5):
    """Equal up to ``rel`` of the scale of ``expected``."""
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * float(expected.abs().max()))


@pytest.mark.parametrize("kind", sorted(TINY))
def test_selecting_the_last_layer_is_the_usual_output(kind, backbones):
    last = layer_count(spec(kind)) or len(backbones[kind].layers.names)
    usual = FeatureEncoder(spec(kind), backbones[kind])
    selected = FeatureEncoder(spec(kind, layers=[last - 1]), backbones[kind])
    with torch.no_grad():
        expected, out = usual(image(0)), selected(image(0))
    close(out, expected)
    assert selected.layer_splits == (expected.shape[1],) and selected.layer_weights == (1.0,)
    assert usual.layer_splits is None and usual.layer_weights is None


@pytest.mark.parametrize("kind", ["dinov2", "sam"])
def test_selected_layers_are_differentiable_in_the_image(kind, backbones):
    enc = FeatureEncoder(spec(kind, layers=[0, 2]), backbones[kind])
    x = image(0).requires_grad_(True)
    out = enc(x)
    assert out.shape == (1, sum(enc.layer_splits), 8, 8)
    out.square().mean().backward()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", sorted(TINY))
def test_layer_lists_match_the_builds_and_the_parse_time_counts(kind, backbones):
    layers = selectable_layers(spec(kind))
    assert [layer.index for layer in layers] == list(range(len(layers)))
    assert tuple(layer.name for layer in layers) == backbones[kind].layers.names
    assert tuple(layer.channels for layer in layers) == backbones[kind].layers.channels
    assert layer_count(spec(kind)) in (None, len(layers))  # timm knows its count only when built


@pytest.mark.parametrize("kind", ["dinov2", "sam"])
def test_parse_time_counts_of_the_default_architectures(kind):
    default = EncoderSpec.from_dict(kind, {"kind": kind, "random_init": True})
    with torch.device("meta"):  # shapes only: no parameter is filled
        backbone = kind_factory(default)(default)
    assert layer_count(default) == len(backbone.layers.names) == 13 - (kind == "dinov2")


@pytest.mark.parametrize("distance", sorted(FEATURE_DISTANCES))
@pytest.mark.parametrize("kind", ["sam", "vgg16"])
def test_weights_one_and_zero_equal_the_first_layer_alone(kind, distance, backbones):
    fn = FEATURE_DISTANCES[distance]
    fixed, moving = image(1), image(2)

    def distance_of(**layers):
        enc = FeatureEncoder(spec(kind, **layers), backbones[kind])
        with torch.no_grad():
            return layered_distance(fn, enc(fixed), enc(moving), enc.layer_splits, enc.layer_weights)

    first = distance_of(layers=[0])
    close(distance_of(layers=[0, 2], layer_weights=[1, 0]), first)
    third = distance_of(layers=[2])
    close(distance_of(layers=[0, 2], layer_weights=[1, 3]), (first + 3 * third) / 4)
    close(distance_of(layers=[0, 2]), (first + third) / 2)


def test_without_layers_the_distance_is_the_plain_one():
    a, b = torch.randn(2, 5, 4, 4), torch.randn(2, 5, 4, 4)
    for fn in FEATURE_DISTANCES.values():
        assert torch.equal(layered_distance(fn, a, b, None, None), fn(a, b))
    with pytest.raises(ValueError, match=r"do not hold layers of \[2, 2\] channels"):
        layered_distance(FEATURE_DISTANCES["l1"], a, b, (2, 2), (1.0, 1.0))


def test_identity_names_layers_only_when_given(backbones):
    usual = FeatureEncoder(spec("vgg16"), backbones["vgg16"]).identity()
    assert "layers" not in usual and "layer_weights" not in usual
    equal = FeatureEncoder(spec("vgg16", layers=[1, 3]), backbones["vgg16"]).identity()
    assert equal["layers"] == [1, 3] and "layer_weights" not in equal
    weighted = FeatureEncoder(spec("vgg16", layers=[1, 3], layer_weights=[2, 1]), backbones["vgg16"]).identity()
    assert weighted["layers"] == [1, 3] and weighted["layer_weights"] == [2.0, 1.0]


def test_layers_survive_the_spec_round_trip():
    s = spec("sam", layers=[0, 3], layer_weights=[0.5, 1])
    assert s.layers == (0, 3) and s.layer_weights == (0.5, 1.0)
    assert EncoderSpec.from_dict(s.name, s.to_dict()) == s


@pytest.mark.parametrize(
    ("kind", "extra", "message"),
    [
        ("vgg16", {"layers": [5]}, "layer index 5 is out of range; kind 'vgg16' has 5 selectable layers (0 to 4); "
                                   "`featreg encoder-layers vgg16` lists them"),
        ("sam", {"layers": [-1]}, "layer index -1 is out of range; kind 'sam' has 4 selectable layers (0 to 3)"),
        ("litemedsam", {"layers": [2, 1]}, "layers must be strictly increasing, got [2, 1]"),
        ("dinov2", {"layers": ["2"]}, "layers must be a non-empty list of layer indices, got ['2']"),
        ("dinov2", {"layers": []}, "layers must be a non-empty list of layer indices, got []"),
        ("vgg16", {"layers": [0, 1], "layer_weights": [1]}, "layer_weights has 1 entries for 2 layers"),
        ("vgg16", {"layers": [0, 1], "layer_weights": [0, 0]}, "layer_weights must be non-negative numbers, not all zero"),
        ("vgg16", {"layers": [0, 1], "layer_weights": [1, -1]}, "layer_weights must be non-negative numbers, not all zero"),
        ("vgg16", {"layer_weights": [1]}, "layer_weights needs layers"),
        ("vgg16", {"layers": [0], "grid": None}, "layers need a grid"),
        ("vgg16", {"normalisation": "imagenet"}, "kind 'vgg16' takes normalisation 'none' only"),
    ],
)
def test_a_mistyped_selection_fails_when_the_spec_is_read(kind, extra, message):
    with pytest.raises(ConfigError, match=re.escape(f"encoder 'tiny-{kind}': {message}")) as info:
        spec(kind, **extra)
    assert "\n" not in str(info.value)


def test_mind_has_no_layers_and_an_unknown_kind_is_named():
    with pytest.raises(ConfigError, match=re.escape("encoder 'm': kind 'mind' has no layers to select; remove layers")):
        EncoderSpec.from_dict("m", {"kind": "mind", "layers": [0]})
    with pytest.raises(ConfigError, match=re.escape("encoder 'v': unknown kind 'vgg19'; known kinds: ")):
        EncoderSpec.from_dict("v", {"kind": "vgg19", "layers": [0]})


def test_a_count_only_the_build_knows_is_checked_when_built():
    s = spec("timm", layers=[5])  # resnet18: act1 and four stages
    with pytest.raises(ConfigError, match=re.escape("encoder 'tiny-timm': layer index 5 is out of range; kind 'timm' has 5 selectable")):
        build_encoder(s)


def test_vgg16_loads_the_shipped_weights():
    from featreg.encoders.checkpoints import CHECKPOINTS, file_digests
    from featreg.encoders.vgg16 import shipped_weights

    recorded = CHECKPOINTS["stlpips_vgg16"]
    size, _, sha = file_digests(shipped_weights())
    assert (size, sha) == (recorded.size, recorded.sha256) and shipped_weights().name == recorded.filename
    learnt = build_encoder(EncoderSpec.from_dict("vgg", {"kind": "vgg16", "input_size": 64, "grid": 16}))
    assert learnt.identity()["weights"] == f"sha256:{sha}"
    state = torch.load(shipped_weights(), map_location="cpu", weights_only=True)
    assert torch.equal(learnt.backbone.net.slice5[-2].weight, state["net.slice5.32.weight"])
    random = build_encoder(EncoderSpec.from_dict("vgg", {"kind": "vgg16", "input_size": 64, "grid": 16, "random_init": True}))
    x = image(3, 64)
    with torch.no_grad():
        a, b = learnt(x), random(x)
    assert a.shape == b.shape == (1, 512, 16, 16) and torch.isfinite(a).all()
    assert (a - b).norm() > 0.5 * a.norm()


def test_vgg16_refuses_a_checkpoint_that_is_not_the_shipped_file(tmp_path):
    from featreg.encoders.checkpoints import CheckpointError

    path = tmp_path / "vgg_shift_tolerant.pth"
    path.write_bytes(b"not the weights")
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {path} is corrupt or not the expected file")) as info:
        build_encoder(EncoderSpec.from_dict("vgg", {"kind": "vgg16", "checkpoint": str(path)}))
    assert "\n" not in str(info.value)
