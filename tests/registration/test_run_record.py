"""run.json has one writer and reader: required entries, checked statuses, and per-slice result folders."""

from __future__ import annotations

import json

import pytest

from featreg.errors import InputError
from featreg.registration.run_record import devices, is_current, read_run, result_dir, write_run

RUN = {"patient": "patient001", "method": "ncc", "status": "ok", "reason": "", "iterations": 3, "seconds": 0.5,
       "peak_memory_mb": 10.0, "device": "cpu", "settings": {}}


def test_written_run_reads_back_and_resumes_only_with_its_fingerprint(tmp_path):
    write_run(tmp_path / "r", RUN | {"fingerprint": "abc"})
    assert read_run(tmp_path / "r", patient="patient001")["seconds"] == 0.5
    assert is_current(tmp_path / "r", "abc") and not is_current(tmp_path / "r", "abd")
    assert not is_current(tmp_path / "missing", "abc")
    with pytest.raises(ValueError, match="run record lacks device"):
        write_run(tmp_path / "s", {k: v for k, v in RUN.items() if k != "device"})
    with pytest.raises(InputError, match="run is for patient 'patient001', not 'patient002'"):
        read_run(tmp_path / "r", patient="patient002")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "run.json").write_text('{"status": "done"}')
    with pytest.raises(InputError, match='expected a JSON object with "status" "ok" or "failed"'):
        read_run(tmp_path / "t")
    assert not is_current(tmp_path / "t", None)


def test_devices_are_read_from_slice_folders_when_a_patient_has_one_pair_per_slice(tmp_path, caplog):
    # one pair per slice: results/<method>/<patient>/slice<NN>/run.json, the metrics row records the slice
    for index, device in ((3, "cuda:0"), (4, "cuda:1")):
        write_run(result_dir(tmp_path, "sam", "patient001", index), RUN | {"device": device})
    assert result_dir(tmp_path, "sam", "patient001", 3) == tmp_path / "sam" / "patient001" / "slice03"
    # one pair per patient: its own folder, even though its row records the chosen slice's index
    write_run(tmp_path / "ncc" / "patient002", RUN)
    assert result_dir(tmp_path, "ncc", "patient002", 5) == tmp_path / "ncc" / "patient002"
    (tmp_path / "mind" / "patient003").mkdir(parents=True)
    (tmp_path / "mind" / "patient003" / "run.json").write_text('{"device": "cu')
    rows = [("sam", "patient001", 3), ("sam", "patient001", 4), ("ncc", "patient002", 5), ("mind", "patient003", None),
            ("ncc", "patient009", None)]
    with caplog.at_level("WARNING"):
        assert devices(tmp_path, rows) == ["cpu", "cuda:0", "cuda:1", "unknown"]
    assert "device of mind/patient003 unknown" in caplog.text
    assert json.loads((tmp_path / "ncc" / "patient002" / "run.json").read_text())["device"] == "cpu"
