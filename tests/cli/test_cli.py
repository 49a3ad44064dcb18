"""The ``featreg`` command line: every subcommand's help, and a bad argument as one line, not a traceback."""

from __future__ import annotations

import argparse

import pytest

from featreg.cli import build_parser, main


def subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(action.choices)


def test_every_subcommand_is_listed():
    assert subcommands() == sorted([
        "synth", "preprocess", "fetch-checkpoints", "features", "feature-figures", "report",
        "register", "evaluate", "collect-metrics", "select-setting", "encoder-layers",
    ])


@pytest.mark.parametrize("command", subcommands())
def test_help(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: featreg {command}")
    assert "--" in out  # lists its options


# One mistake per subcommand: (arguments, exit status, the one line it prints).
BAD = {
    "synth": (["--out", "{tmp}/c", "--patients", "0"], 2,
              "featreg synth: error: argument --patients: must be >= 1, got 0"),
    "preprocess": (["--root", "{tmp}", "--out", "{tmp}/p", "--split", "tests"], 2,
                   "featreg preprocess: error: argument --split: invalid choice: 'tests' (choose from "),
    "fetch-checkpoints": (["--dest", "{tmp}", "dinov3"], 2,
                          "featreg fetch-checkpoints: error: unknown checkpoint 'dinov3'; known: "),
    "features": (["--encoders", "{tmp}/none.yaml", "--encoder", "mind", "--pairs", "{tmp}", "--out-dir", "{tmp}/f"], 2,
                 "featreg features: error: encoder config {tmp}/none.yaml does not exist"),
    "feature-figures": (["--encoders", "{tmp}/none.yaml", "--pair", "{tmp}", "--out", "{tmp}"], 2,
                        "featreg feature-figures: error: encoder config {tmp}/none.yaml does not exist"),
    "report": (["--metrics", "{tmp}/metrics.csv", "--config", "{tmp}/none.yaml", "--out-dir", "{tmp}"], 2,
               "featreg report: error: config file {tmp}/none.yaml is missing"),
    "register": (["--method-file", "{tmp}/ncc.json", "--pairs", "{tmp}", "--out-dir", "{tmp}", "--manifest",
                  "{tmp}/m.json"], 2, "featreg register: error: file {tmp}/ncc.json: method file is missing"),
    "evaluate": (["--pairs", "{tmp}", "--out", "{tmp}/m.csv", "--results-dir", "{tmp}", "--method-file",
                  "{tmp}/ncc.json"], 2, "featreg evaluate: error: file {tmp}/ncc.json: method file is missing"),
    "collect-metrics": (["--out", "{tmp}/metrics.csv"], 2,
                        "featreg collect-metrics: error: the following arguments are required: tables"),
    "encoder-layers": (["vgg19"], 2,
                       "featreg encoder-layers: error: encoder 'vgg19': unknown kind 'vgg19'; known kinds: "),
    "select-setting": (["--spec", "{{", "--metrics", "{tmp}/m.csv", "--out", "{tmp}/s.json", "--method-out",
                        "{tmp}/t.json"], 2, "featreg select-setting: error: --spec is not JSON: "),
}


@pytest.mark.parametrize("command", subcommands())
def test_a_bad_argument_is_one_line(command, tmp_path, capsys):
    args, status, line = BAD[command]
    assert main([command, *(a.format(tmp=tmp_path) for a in args)]) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(line.format(tmp=tmp_path)), err


def test_a_value_error_from_the_library_is_one_line_with_status_1(tmp_path, capsys):
    # resolve_device raises ValueError when CUDA is asked for on a machine without it
    pytest.importorskip("torch").cuda.is_available() and pytest.skip("this machine has CUDA")
    spec = tmp_path / "mind.json"
    spec.write_text('{"mind": {"kind": "mind"}}')
    assert main(["features", "--encoders", str(spec), "--encoder", "mind", "--pairs", str(tmp_path),
                 "--out-dir", str(tmp_path / "f"), "--device", "cuda"]) == 1
    err = capsys.readouterr().err
    assert err == "featreg features: error: device 'cuda' requested but no CUDA device is available\n"


def test_encoder_layers_prints_each_layer(capsys):
    assert main(["encoder-layers", "vgg16", "--size", "32"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["index", "name", "channels", "grid"]
    assert [line.split() for line in lines[1:]] == [
        ["0", "net.slice1", "64", "32x32"],
        ["1", "net.slice2", "128", "17x17"],
        ["2", "net.slice3", "256", "9x9"],
        ["3", "net.slice4", "512", "5x5"],
        ["4", "net.slice5", "512", "3x3"],
    ]
