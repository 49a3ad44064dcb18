"""RegistrationSettings: defaults, the paper preset, validation messages, from_dict."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from featreg.errors import ConfigError
from featreg.experiment.tuning import PAPER_SETTINGS
from featreg.registration.settings import RegistrationSettings


def test_paper_preset():
    s = RegistrationSettings.paper()
    assert (s.order, s.diffeomorphic, s.regulariser, s.lam, s.lr, s.iterations) == (1, True, "airlab", 120.0, 5e-4, 1500)
    assert (s.lattice, s.control_spacing_px, s.lattice_placement, s.squaring_steps, s.squaring_convention) == (
        None, 6.0, "airlab", 10, "airlab")
    assert RegistrationSettings.paper(iterations=10).iterations == 10


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"lattice": None}, "give exactly one of lattice and control_spacing_px"),
        ({"lattice_placement": "airlab"}, "lattice_placement 'airlab' takes control_spacing_px, an integer stride in px"),
        ({"lattice": None, "control_spacing_px": 5.5, "lattice_placement": "airlab"}, "got control_spacing_px 5.5"),
        ({"lattice_placement": "corner"}, "lattice_placement must be one of ['centred', 'airlab'], got 'corner'"),
        ({"squaring_convention": "torch"}, "squaring_convention must be one of ['exact', 'airlab'], got 'torch'"),
        ({"control_spacing_px": 6.0}, "give exactly one of lattice and control_spacing_px"),
        ({"lattice": None, "control_spacing_px": -1.0}, "control_spacing_px must be positive, got -1.0"),
        ({"lattice": (24,)}, "lattice must be two integers, got (24,)"),
        ({"lattice": (3, 24)}, "lattice needs at least 4 control points per axis for order 3, got (3, 24)"),
        ({"order": 2}, "order must be one of [1, 3], got 2"),
        ({"squaring_steps": 0}, "squaring_steps must be an integer >= 1, got 0"),
        ({"regulariser": "bending"}, "regulariser must be one of ['airlab', 'physical'], got 'bending'"),
        ({"lam": -1.0}, "lam must be >= 0, got -1.0"),
        ({"lr": 0.0}, "lr must be > 0, got 0.0"),
        ({"iterations": 0}, "iterations must be an integer >= 1, got 0"),
        ({"alpha": 1.5}, "alpha must be in [0, 1], got 1.5"),
        ({"image_distance": "mi"}, "image_distance must be one of ['ncc', 'mse'], got 'mi'"),
        ({"feature_distance": "l2"}, "feature_distance must be one of ['cosine', 'l1'] or None, got 'l2'"),
        ({"alpha": 0.3}, "alpha = 0.3 needs a feature_distance (one of ['cosine', 'l1'])"),
        ({"early_stop_rtol": 0.0}, "early_stop_rtol must be > 0 or None, got 0.0"),
    ],
)
def test_validation_messages(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        RegistrationSettings(**kwargs)


def test_from_dict_round_trip_and_unknown_keys():
    s = RegistrationSettings(alpha=0.3, feature_distance="cosine", lattice=(12, 16))
    assert RegistrationSettings.from_dict(s.to_dict()) == s
    with pytest.raises(ConfigError, match=re.escape("unknown registration setting(s): lamda, step")):
        RegistrationSettings.from_dict({"lamda": 1.0, "step": 2})


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        RegistrationSettings().lam = 3.0  # type: ignore[misc]


def test_paper_config_and_paper_rows_use_the_paper_preset():
    root = Path(__file__).resolve().parents[2]
    registration = yaml.safe_load((root / "config" / "paper.yaml").read_text())["registration"]
    assert RegistrationSettings.from_dict(registration) == RegistrationSettings.paper()
    paper = RegistrationSettings.paper().to_dict()
    assert {k: paper[k] for k in PAPER_SETTINGS} == PAPER_SETTINGS


def test_settings_name_the_engines_choices():
    """The names a config is checked against (without torch) are the engine's tables."""
    from featreg.registration.losses import FEATURE_DISTANCES, IMAGE_DISTANCES
    from featreg.registration.settings import FEATURE_DISTANCE_NAMES, IMAGE_DISTANCE_NAMES

    assert tuple(IMAGE_DISTANCES) == IMAGE_DISTANCE_NAMES
    assert tuple(FEATURE_DISTANCES) == FEATURE_DISTANCE_NAMES
