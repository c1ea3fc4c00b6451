"""Outputs that would destroy an input or a special file, and inputs that are special files.

Every refusal is exit 2 with one exact line, and the folder is byte for byte as it was:
an output never replaces an input of the same command (the spec, a file it extends,
weights, calibration inputs, another output), whatever path leads there (``..``, a symbolic
or a hard link), nor anything that is not a regular file (``/dev/null``, a FIFO, a
directory). When a later output fails, the earlier one is rolled back. Inputs that are
FIFOs or devices are refused by kind before anything opens them (a FIFO would block).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import archspec
from archspec.cli import main
from tests.conftest import ROOT, run_cli

TUTORIAL = ROOT / "specs" / "tutorial.yaml"
REFUSED = "an output never replaces an input of the same command"
NOT_REGULAR = "not a regular file; an output is written to a new path or over a regular file"


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def _snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every entry of ``folder`` with its bytes (its kind for what is not a regular file)."""
    return {
        path.name: path.read_bytes() if path.is_file() and not path.is_symlink() else
        ("link to " + os.readlink(path) if path.is_symlink() else "special")
        for path in sorted(folder.iterdir())
    }


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A spec extending a base, tutorial weights, calibration inputs and a FIFO."""
    shutil.copy(TUTORIAL, tmp_path / "base.yaml")
    (tmp_path / "net.yaml").write_text("extends: base.yaml\nname: net\n")
    # From-weights reads only shapes: a real state dict of the tutorial network.
    torch.save(archspec.build(TUTORIAL).state_dict(), tmp_path / "w.pt")
    np.save(tmp_path / "calib.npy", np.zeros((2, 1, 28, 28), dtype=np.float32))
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "sub").mkdir()
    return tmp_path


def _refused(folder: Path, args: list[str], line: str) -> None:
    before = _snapshot(folder)
    result = _invoke(*args)
    assert (result.exit_code, result.output) == (2, line + "\n"), result.output
    assert _snapshot(folder) == before


def test_export_onto_the_spec_or_a_base_it_extends(folder):
    net, base = str(folder / "net.yaml"), str(folder / "base.yaml")
    _refused(folder, ["export", net, "--onnx", net, "--no-verify"], f"{net}: output is the spec {net!r}; {REFUSED}")
    _refused(folder, ["export", net, "--onnx", base, "--no-verify"],
             f"{base}: output is the extended spec {base!r}; {REFUSED}")
    report = str(folder / "sub" / ".." / "net.yaml")  # the same file by another spelling
    _refused(folder, ["export", net, "--onnx", str(folder / "x.onnx"), "--report", report, "--no-verify"],
             f"{report}: output is the spec {net!r}; {REFUSED}")


def test_export_onto_weights_calibration_or_the_other_output(folder):
    spec, onnx, weights = str(folder / "base.yaml"), str(folder / "x.onnx"), str(folder / "w.pt")
    _refused(folder, ["export", spec, "--weights", weights, "--onnx", weights, "--no-verify"],
             f"{weights}: output is the weights file {weights!r}; {REFUSED}")
    calibration = str(folder / "calib.npy")
    _refused(folder, ["export", spec, "--precision", "int8", "--calibration", calibration, "--onnx", calibration],
             f"{calibration}: output is the calibration array {calibration!r}; {REFUSED}")
    _refused(folder, ["export", spec, "--onnx", onnx, "--report", onnx, "--no-verify"],
             f"{onnx}: output is also the output {onnx!r}; each output needs its own file")


def test_links_to_an_input_are_the_input(folder):
    spec = str(folder / "base.yaml")
    os.symlink("base.yaml", folder / "soft.onnx")
    os.link(folder / "base.yaml", folder / "hard.onnx")
    for name in ("soft.onnx", "hard.onnx"):
        out = str(folder / name)
        _refused(folder, ["export", spec, "--onnx", out, "--no-verify"], f"{out}: output is the spec {spec!r}; {REFUSED}")
    os.symlink("base.yaml", folder / "drawn.svg")  # diagram writes only .svg or .png
    out = str(folder / "drawn.svg")
    _refused(folder, ["diagram", spec, "-o", out], f"{out}: output is the spec {spec!r}; {REFUSED}")


def test_from_weights_onto_its_checkpoint(folder):
    weights = str(folder / "w.pt")
    _refused(folder, ["from-weights", weights, "-o", weights], f"{weights}: output is the weights file {weights!r}; {REFUSED}")


@pytest.mark.parametrize("target, kind", [
    ("/dev/null", "a character device"),
    ("/dev/full", "a character device"),
    ("pipe", "a FIFO (named pipe)"),
])
def test_outputs_onto_special_files(folder, target, kind):
    out = target if target.startswith("/") else str(folder / target)
    if not os.path.exists(out):
        pytest.skip(f"{out} does not exist here")
    spec, weights = str(folder / "base.yaml"), str(folder / "w.pt")
    line = f"{out}: output path is {kind}, {NOT_REGULAR}"
    _refused(folder, ["export", spec, "--onnx", out, "--no-verify"], line)
    _refused(folder, ["export", spec, "--onnx", str(folder / "x.onnx"), "--report", out, "--no-verify"], line)
    _refused(folder, ["from-weights", weights, "-o", out], line)
    assert os.path.exists(out) and not os.path.isfile(out)  # still the device or the FIFO


def test_diagram_onto_a_fifo(folder):
    os.mkfifo(folder / "pipe.svg")
    out = str(folder / "pipe.svg")
    _refused(folder, ["diagram", str(folder / "base.yaml"), "-o", out], f"{out}: output path is a FIFO (named pipe), "
             f"{NOT_REGULAR}")


def test_report_that_cannot_be_written_rolls_the_onnx_file_back(folder, monkeypatch):
    """The ONNX file is in place when writing the report fails (a full disk): both go."""
    spec, onnx, report = str(folder / "base.yaml"), folder / "x.onnx", str(folder / "r.json")
    written: list[bool] = []

    def full_disk(target, text):
        written.append(onnx.is_file())  # the moment under test: the ONNX file is at its path
        raise archspec.SpecError(archspec.Problem("cannot write the file: No space left on device", file=str(target)))

    monkeypatch.setattr("archspec.atomic.write_text", full_disk)
    before = _snapshot(folder)
    result = _invoke("export", spec, "--onnx", str(onnx), "--report", report, "--no-verify")
    assert (result.exit_code, result.output) == (2, f"{report}: cannot write the file: No space left on device\n")
    assert written == [True]
    assert _snapshot(folder) == before
    onnx.write_bytes(b"the old file")  # an existing output gets its old contents back
    result = _invoke("export", spec, "--onnx", str(onnx), "--report", report, "--no-verify")
    assert result.exit_code == 2, result.output
    assert written == [True, True]
    assert _snapshot(folder) == {**before, "x.onnx": b"the old file"}


def test_output_name_too_long_refused_before_work(folder):
    spec, report = str(folder / "base.yaml"), str(folder / ("r" * 250 + ".json"))
    _refused(folder, ["export", spec, "--onnx", str(folder / "x.onnx"), "--report", report, "--no-verify"],
             f"{report}: output file name is too long (255 bytes; 241 at most here)")


def test_both_outputs_written_together(folder):
    spec, onnx, report = str(folder / "base.yaml"), folder / "x.onnx", folder / "r.json"
    onnx.write_bytes(b"the old file")
    result = _invoke("export", spec, "--onnx", str(onnx), "--report", str(report), "--no-verify")
    assert result.exit_code == 0, result.output
    assert onnx.read_bytes()[:12] != b"the old file" and report.read_text().startswith("{")
    assert sorted(_snapshot(folder)) == ["base.yaml", "calib.npy", "net.yaml", "pipe", "r.json", "sub", "w.pt",
                                         "x.onnx"]  # no backup or temporary left


# ---- inputs that are special files: refused by kind, in a fresh interpreter (a FIFO opened would block) ----


@pytest.mark.parametrize("option, what", [
    ("--weights", "weights file"),
    ("--calibration", "calibration array"),
])
def test_export_input_fifo_refused_before_opening(folder, option, what):
    pipe = str(folder / "pipe")
    extra = ["--precision", "int8"] if option == "--calibration" else ["--no-verify"]
    done = run_cli("export", str(folder / "base.yaml"), "--onnx", str(folder / "x.onnx"), option, pipe, *extra)
    assert (done.returncode, done.stderr) == (2, f"{pipe}: cannot read {what}: a FIFO (named pipe), not a regular file\n")
    assert not (folder / "x.onnx").exists()


def test_from_weights_device_and_fifo_refused_before_opening(folder):
    for source, kind in (("/dev/zero", "a character device"), (str(folder / "pipe"), "a FIFO (named pipe)")):
        done = run_cli("from-weights", source, "-o", str(folder / "out.yaml"))
        assert (done.returncode, done.stderr) == (2, f"{source}: cannot read weights file: {kind}, not a regular file\n")
    assert not (folder / "out.yaml").exists()


def test_check_input_file_words_each_kind(folder):
    """The helper every reader of a path uses (``extends`` too): missing and FIFO are told apart."""
    from archspec.format.paths import check_input_file

    cases = {
        folder / "missing.yaml": "No such file or directory",
        folder / "sub": "a directory",
        folder / "pipe": "a FIFO (named pipe), not a regular file",
        Path("/dev/zero"): "a character device, not a regular file",
    }
    for path, reason in cases.items():
        with pytest.raises(archspec.SpecError) as caught:
            check_input_file(path, "spec")
        assert str(caught.value) == f"{path}: cannot read spec: {reason}"
    assert check_input_file(folder / "base.yaml", "spec").st_size == TUTORIAL.stat().st_size
