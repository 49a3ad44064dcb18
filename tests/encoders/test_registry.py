import re

import pytest

from featreg.encoders.registry import EncoderSpec, load_encoder_specs
from featreg.errors import ConfigError


def test_unknown_kind_lists_known_kinds():
    with pytest.raises(ConfigError, match=re.escape("encoder 'x': unknown kind 'clip'; known kinds: dinov2, litemedsam, mind, sam, timm, vgg16")):
        EncoderSpec.from_dict("x", {"kind": "clip"})


def test_unknown_field_is_named():
    with pytest.raises(ConfigError, match=r"encoder 'x': unknown field\(s\) resolution; known fields: kind, checkpoint"):
        EncoderSpec.from_dict("x", {"kind": "mind", "resolution": 3})


@pytest.mark.parametrize("kind", ["dinov2", "sam", "timm"])
def test_no_checkpoint_without_random_init_is_an_error(kind):
    with pytest.raises(ConfigError, match=f"kind '{kind}' needs a checkpoint.*never falls back to random weights"):
        EncoderSpec.from_dict("x", {"kind": kind, "model": "resnet18"})


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"kind": "sam", "random_init": True, "checkpoint": "a.pth"}, "random_init is true, so checkpoint must be null"),
        ({"kind": "mind", "random_init": True}, "kind 'mind' has no weights"),
        ({"kind": "mind", "normalisation": "imagenet"}, "kind 'mind' takes normalisation 'none' only"),
        ({"kind": "timm", "random_init": True}, "kind 'timm' needs model"),
        ({"kind": "sam", "random_init": True, "grid": 0}, "grid must be a positive integer or null, got 0"),
        ({"kind": "sam", "random_init": True, "normalisation": "sam"}, "normalisation must be one of none, imagenet, got 'sam'"),
        ({"kind": "sam", "random_init": True, "dtype": "fp16"}, "dtype must be one of auto, float32, bf16, got 'fp16'"),
        ({"checkpoint": "a.pth"}, "missing field 'kind'"),
    ],
)
def test_bad_entries(entry, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        EncoderSpec.from_dict("x", entry)


def test_defaults_follow_the_paper():
    spec = EncoderSpec.from_dict("dino", {"kind": "dinov2", "checkpoint": "~/w/dinov2_vitb14_reg4_pretrain.pth"})
    assert spec.normalisation == "none" and spec.grid == 64 and not spec.random_init
    assert spec.checkpoint.is_absolute() and spec.checkpoint.name == "dinov2_vitb14_reg4_pretrain.pth"


def test_load_specs_from_yaml_with_encoders_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("encoders:\n  mind: {kind: mind, grid: null}\n  lite: {kind: litemedsam}\n")
    specs = load_encoder_specs(path)
    assert list(specs) == ["mind", "lite"]
    assert specs["mind"].grid is None and specs["lite"].checkpoint is None


def test_load_specs_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_encoder_specs(tmp_path / "none.yaml")
