"""``archspec export``: output lines, exit codes 0/1/2/130, provider fallback, opsets, and nothing
half-written, Ctrl-C included."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper
from torch import nn

import archspec
from archspec.cli import export as export_command
from archspec.cli import main
from archspec.exporters import emitters
from archspec.exporters import onnx as onnx_exporter
from archspec.exporters.emitters import EMITTERS
from tests.conftest import ROOT
from tests.nontrivial import randomize_state
from tests.refused_open import refuse_open
from tests.threads import one_torch_thread  # noqa: F401  (autouse)

pytestmark = pytest.mark.onnx

TUTORIAL = str(ROOT / "specs" / "tutorial.yaml")
NUMBER = r"[0-9.e+-]+"


def _export(*args: str):
    return CliRunner().invoke(main, ["export", *args])


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory) -> tuple[object, Path]:
    """The tutorial spec exported once through the CLI with seeded weights, and its JSON report.

    Tests that reuse the exported graph pass the same ``--weights``, so PyTorch and the file agree.
    """
    folder = tmp_path_factory.mktemp("tutorial")
    torch.manual_seed(0)
    torch.save(randomize_state(archspec.build(TUTORIAL)).state_dict(), folder / "w.pt")
    result = _export(TUTORIAL, "--onnx", str(folder / "tutorial.onnx"), "--report", str(folder / "report.json"),
                     "--weights", str(folder / "w.pt"), "--provider", "cpu", "--batch-size", "2")
    return result, folder


@pytest.fixture
def exported_as(monkeypatch):
    """Make the exporter return a given model, so a test runs the rest of the pipeline on it quickly."""

    def use(model: onnx.ModelProto) -> None:
        monkeypatch.setattr(onnx_exporter, "_export", lambda *_, **__: (onnx.ModelProto.FromString(
            model.SerializeToString()), "archspec", None))

    return use


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_export_writes_file_report_and_lines(tutorial):
    result, folder = tutorial
    assert result.exit_code == 0, result.output
    assert _listing(folder) == ["report.json", "tutorial.onnx", "w.pt"]
    report = json.loads((folder / "report.json").read_text())
    size = (folder / "tutorial.onnx").stat().st_size
    assert report["file_bytes"] == size
    # tutorial.yaml: 758,226 fp32 parameters + running mean and variance of 3,304 batch-norm
    # channels (the stage widths in its header), plus the graph and metadata
    assert 4 * (758_226 + 6_608) <= size <= 4 * (758_226 + 6_608) + 500_000, size
    lines = result.output.splitlines()
    assert lines[0] == f"wrote {folder / 'tutorial.onnx'}: {size / 1e6:.1f} MB, 758,226 parameters, opset 20, archspec exporter"
    assert lines[1] == "input (batch, 1, height, width) -> logits"
    assert lines[2] == "verified on CPUExecutionProvider (CPU provider requested), rtol 0.001, atol 0.0001:"
    for line, shape in zip(lines[3:], ["batch 1 (1, 1, 96, 96)", "batch 2 (2, 1, 96, 96)", "batch 2 at 72×60 (2, 1, 72, 60)"]):
        assert re.fullmatch(rf"  {re.escape(shape)}: max abs error {NUMBER}, max rel error {NUMBER} \(ok\)", line), line
    assert re.fullmatch(rf"latency on CPUExecutionProvider: batch 1 {NUMBER} ms, batch 2 {NUMBER} ms", lines[6]), lines[6]
    assert len(lines) == 7
    latency = report["verification"]["latency"]
    assert [(t["provider"], t["batch"], t["input_shape"]) for t in latency] == [
        ("CPUExecutionProvider", 1, [1, 1, 96, 96]), ("CPUExecutionProvider", 2, [2, 1, 96, 96])]
    assert [f"{t['milliseconds']:.1f}" for t in latency] == re.findall(r"batch \d ([0-9.]+) ms", lines[6])
    cases = report["verification"]["cases"]
    assert [c["outside_tolerance"] for c in cases] == [0, 0, 0]
    assert [c["elements"] for c in cases] == [10, 20, 20]
    assert max(c["max_abs_error"] for c in cases) < 1e-5
    assert report["verification"]["passed"] is True and report["written"] is True
    assert report["checker"] == "passed"


def _corrupted(folder: Path) -> onnx.ModelProto:
    """The tutorial export with 0.001 added to class 0's classifier weights: only logit 0 is wrong."""
    model = onnx.load(str(folder / "tutorial.onnx"))
    (weight,) = [t for t in model.graph.initializer if t.name == "classifier.weight"]
    values = numpy_helper.to_array(weight).copy()
    values[0] += 1e-3
    weight.CopyFrom(numpy_helper.from_array(values, "classifier.weight"))
    return model


def test_corrupted_export_fails_verification_and_leaves_nothing(tutorial, tmp_path, exported_as):
    exported_as(_corrupted(tutorial[1]))
    out = tmp_path / "bad.onnx"
    result = _export(TUTORIAL, "--weights", str(tutorial[1] / "w.pt"), "--onnx", str(out), "--report", str(tmp_path / "report.json"),
                     "--provider", "cpu", "--batch-size", "2")
    assert result.exit_code == 1, result.output
    assert _listing(tmp_path) == ["report.json"]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["written"] is False and report["verification"]["passed"] is False
    # one logit per sample is off by 0.001 × the sum of its 248 pooled features: 1 of 10, 2 of 20, 2 of 20
    assert [c["outside_tolerance"] for c in report["verification"]["cases"]] == [1, 2, 2]
    assert all(0.01 < c["max_abs_error"] < 1.0 for c in report["verification"]["cases"])
    assert re.fullmatch(
        r"error: verification failed \(rtol 0.001, atol 0.0001\): "
        rf"batch 1 \(1, 1, 96, 96\): max abs error {NUMBER}, max rel error {NUMBER} \(1 of 10 outputs outside tolerance\); "
        rf"batch 2 \(2, 1, 96, 96\): max abs error {NUMBER}, max rel error {NUMBER} \(2 of 20 outputs outside tolerance\); "
        rf"batch 2 at 72×60 \(2, 1, 72, 60\): max abs error {NUMBER}, max rel error {NUMBER} "
        rf"\(2 of 20 outputs outside tolerance\); nothing written to {re.escape(str(out))}\n",
        result.output,
    ), result.output


def _identity_batch_norm(graph, x: str, norm: nn.Module, name: str, dims: int) -> str:
    """A BatchNormalization emitter that forgets the norm: right only while it is an identity."""
    return x


def _shift_and_mean_swapped(graph, x: str, norm: nn.Module, name: str, dims: int) -> str:
    """A BatchNormalization emitter with its ``B`` and ``mean`` inputs swapped: right while both are 0."""
    keys = ("weight", "running_mean", "bias", "running_var")
    inputs = [x, *(graph.weight(f"{name}.{key}", getattr(norm, key)) for key in keys)]
    return graph.op("BatchNormalization", inputs, name=name, epsilon=norm.eps)


@pytest.mark.parametrize("mutant", [_identity_batch_norm, _shift_and_mean_swapped], ids=["identity", "swapped"])
def test_a_wrong_batch_norm_emitter_fails_a_fresh_modules_export(tmp_path, monkeypatch, mutant):
    # A fresh module's norms are identities: only the check on seeded random state can see these.
    monkeypatch.setitem(emitters._MODULES, nn.BatchNorm2d, mutant)
    out, report_path = tmp_path / "t.onnx", tmp_path / "report.json"
    result = _export(TUTORIAL, "--onnx", str(out), "--report", str(report_path), "--provider", "cpu",
                     "--batch-size", "2")
    assert result.exit_code == 1, result.output
    assert _listing(tmp_path) == ["report.json"], "nothing may be written but the report"
    assert result.output.startswith(
        "error: verification with seeded random norm statistics, affine values and biases failed (the module "
        "passed with 21 of 21 norms and 1 of 21 biases at their initial values, which hide norm and bias "
        "mistakes; rtol 0.001, atol 0.0001): batch 1 (1, 1, 96, 96): max abs error "), result.output
    assert result.output.endswith(f"; nothing written to {out}\n"), result.output
    report = json.loads(report_path.read_text())
    assert report["verification"]["passed"] is True, "the fresh module's own check passed"
    random_state = report["random_state"]
    assert (random_state["passed"], random_state["seed"], report["written"]) == (False, 0, False)
    assert random_state["initial_values"] == "21 of 21 norms and 1 of 21 biases"
    assert all(case["outside_tolerance"] > 0 for case in random_state["verification"]["cases"]), random_state
    # The control: without the random-state check the same export passes, so this test sees that check.
    monkeypatch.setattr(onnx_exporter, "initial_values", lambda _: None)
    result = _export(TUTORIAL, "--onnx", str(out), "--provider", "cpu", "--batch-size", "2")
    assert result.exit_code == 0 and out.exists(), result.output


def test_a_fresh_modules_export_is_verified_again_with_random_state(tmp_path):
    out, report_path = tmp_path / "t.onnx", tmp_path / "report.json"
    result = _export(TUTORIAL, "--onnx", str(out), "--report", str(report_path), "--provider", "cpu",
                     "--batch-size", "2")
    assert result.exit_code == 0, result.output
    line = result.output.splitlines()[-1]
    assert re.fullmatch(
        r"verified again with seeded random norm statistics, affine values and biases \(seed 0; 21 of 21 norms "
        rf"and 1 of 21 biases held their initial values\): 3 cases, max abs error {NUMBER}, max rel error {NUMBER}",
        line), line
    random_state = json.loads(report_path.read_text())["random_state"]
    assert random_state["passed"] is True and len(random_state["verification"]["cases"]) == 3, random_state
    assert max(case["max_abs_error"] for case in random_state["verification"]["cases"]) < 1e-5, random_state
    stored = json.loads({p.key: p.value for p in onnx.load(out).metadata_props}["archspec.verification_random_state"])
    assert (stored["passed"], stored["seed"]) == (True, 0)
    assert stored["initial_values"] == "21 of 21 norms and 1 of 21 biases"


def test_nan_output_fails_verification(tutorial, tmp_path, exported_as):
    model = onnx.load(str(tutorial[1] / "tutorial.onnx"))
    (weight,) = [t for t in model.graph.initializer if t.name == "classifier.weight"]
    values = numpy_helper.to_array(weight).copy()
    values[3, 0] = float("nan")  # logit 3 of every sample becomes NaN
    weight.CopyFrom(numpy_helper.from_array(values, "classifier.weight"))
    exported_as(model)
    out = tmp_path / "nan.onnx"
    result = _export(TUTORIAL, "--weights", str(tutorial[1] / "w.pt"), "--onnx", str(out),
                     "--report", str(tmp_path / "r.json"), "--provider", "cpu", "--batch-size", "2")
    assert result.exit_code == 1, result.output
    assert _listing(tmp_path) == ["r.json"]
    cases = json.loads((tmp_path / "r.json").read_text())["verification"]["cases"]
    assert [(c["outside_tolerance"], c["non_finite"], c["elements"]) for c in cases] == [(1, 1, 10), (2, 2, 20), (2, 2, 20)]
    assert all(c["max_abs_error"] < 1e-5 for c in cases)  # the other logits are right
    assert "(1 of 10 outputs outside tolerance, 1 not finite)" in result.output


def test_checker_rejection_exits_1_and_leaves_nothing(tutorial, tmp_path, exported_as, monkeypatch):
    def reject(*_args, **_kwargs):
        raise onnx.checker.ValidationError("simulated checker failure\nsecond line")

    exported_as(onnx.load(str(tutorial[1] / "tutorial.onnx")))
    monkeypatch.setattr(onnx.checker, "check_model", reject)
    out = tmp_path / "rejected.onnx"
    result = _export(TUTORIAL, "--weights", str(tutorial[1] / "w.pt"), "--onnx", str(out),
                     "--report", str(tmp_path / "r.json"), "--provider", "cpu", "--batch-size", "2")
    assert (result.exit_code, result.output) == (
        1, f"error: onnx.checker rejected the file: simulated checker failure; nothing written to {out}\n"
    )
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["checker"], report["written"]) == ("simulated checker failure", False)
    assert report["verification"]["passed"] is True
    assert _listing(tmp_path) == ["r.json"]


def test_tolerance_override_accepts_the_same_file(tutorial, tmp_path, exported_as):
    exported_as(_corrupted(tutorial[1]))
    out = tmp_path / "tolerant.onnx"
    result = _export(TUTORIAL, "--weights", str(tutorial[1] / "w.pt"), "--onnx", str(out), "--provider", "cpu", "--batch-size", "2", "--atol", "1")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[2] == (
        "verified on CPUExecutionProvider (CPU provider requested), rtol 0.001, atol 1:"
    )
    assert _listing(tmp_path) == ["tolerant.onnx"]


def test_no_verify_marks_the_file(tutorial, tmp_path, exported_as):
    exported_as(onnx.load(str(tutorial[1] / "tutorial.onnx")))
    out = tmp_path / "unverified.onnx"
    result = _export(TUTORIAL, "--weights", str(tutorial[1] / "w.pt"), "--onnx", str(out), "--no-verify")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[2:] == ["not verified (--no-verify)"]
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["archspec.verification"] == "not run"


def test_auto_falls_back_to_cpu_and_says_why(tutorial, tmp_path, exported_as, monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    exported_as(onnx.load(str(tutorial[1] / "tutorial.onnx")))
    reason = "this onnxruntime build has no CUDAExecutionProvider (available: CPUExecutionProvider)"
    result = _export(TUTORIAL, "--weights", str(tutorial[1] / "w.pt"), "--onnx", str(tmp_path / "auto.onnx"), "--report", str(tmp_path / "r.json"),
                     "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[2] == f"verified on CPUExecutionProvider ({reason}), rtol 0.001, atol 0.0001:"
    verification = json.loads((tmp_path / "r.json").read_text())["verification"]
    assert verification["provider_requested"] == "auto"
    assert verification["providers"] == ["CPUExecutionProvider"]
    assert verification["cuda_unused_reason"] == reason


def test_provider_cuda_without_cuda_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    result = _export(TUTORIAL, "--onnx", str(tmp_path / "cuda.onnx"), "--provider", "cuda")
    assert result.exit_code == 2
    assert result.output == (
        "error: --provider cuda: this onnxruntime build has no CUDAExecutionProvider "
        "(available: CPUExecutionProvider)\n"
    )
    assert _listing(tmp_path) == []


def test_output_is_a_directory(tmp_path):
    result = _export(TUTORIAL, "--onnx", str(tmp_path))
    assert (result.exit_code, result.output) == (2, f"{tmp_path}: output path is a directory\n")
    assert _listing(tmp_path) == []


def test_output_directory_missing(tmp_path):
    out = tmp_path / "missing" / "x.onnx"
    result = _export(TUTORIAL, "--onnx", str(out))
    assert (result.exit_code, result.output) == (
        2, f"{out}: output directory '{tmp_path / 'missing'}' does not exist\n"
    )


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS], ids=["EACCES", "EROFS"])
def test_output_directory_unwritable(tmp_path, monkeypatch, code):
    # The system refuses to create files in the folder: no write permission (EACCES), or a
    # read-only file system (EROFS), whoever runs the test; file modes would not stop root.
    folder = tmp_path / "read-only"
    folder.mkdir()
    refuse_open(monkeypatch, lambda path: path.parent == folder, code)
    out = folder / "x.onnx"
    result = _export(TUTORIAL, "--onnx", str(out), "--provider", "cpu")
    assert (result.exit_code, result.output) == (2, f"{out}: cannot write to '{folder}': {os.strerror(code)}\n")
    assert _listing(folder) == []


def test_bad_weights_exit_2_with_diff(tutorial, tmp_path):
    weights = tutorial[1] / "w.pt"
    result = _export(TUTORIAL, "--onnx", str(tmp_path / "x.onnx"), "--weights", str(weights),
                     "--set", "head.num_classes=5", "--provider", "cpu")
    assert result.exit_code == 2
    assert result.output == (
        f"{weights}: 2 shape mismatches: classifier.weight (file (10, 248), model (5, 248)), "
        "classifier.bias (file (10), model (5)); to fine-tune another output layer, skip the file's (--skip-head, skip_head=True)\n"
    )
    assert _listing(tmp_path) == []


def test_opset_outside_the_range_exits_2_with_one_line(tmp_path):
    result = _export(TUTORIAL, "--onnx", str(tmp_path / "x.onnx"), "--opset", "12", "--provider", "cpu")
    newest = onnx.defs.onnx_opset_version()
    assert (result.exit_code, result.output) == (
        2, f"error: --opset: opset 12 is outside the opsets archspec writes: 13 to {newest} (onnx {onnx.__version__})\n")
    assert _listing(tmp_path) == []


def test_chosen_opset_is_the_files(tutorial, tmp_path):
    out = tmp_path / "x.onnx"
    result = _export(TUTORIAL, "--onnx", str(out), "--opset", "13", "--weights", str(tutorial[1] / "w.pt"),
                     "--provider", "cpu", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert ", opset 13, archspec exporter" in result.output.splitlines()[0]
    assert [(e.domain, e.version) for e in onnx.load(str(out)).opset_import] == [("", 13)]


# ---- Ctrl-C: exit 130, "interrupted", nothing at OUT and no temporary file ---------------------


@pytest.fixture
def interrupt_at(monkeypatch):
    """Raise KeyboardInterrupt (what Python's SIGINT handler raises) when progress reaches a step."""

    def arm(step: str) -> list[str]:
        seen: list[str] = []

        def progress(message: str) -> None:
            seen.append(message)
            if message.startswith(step):
                raise KeyboardInterrupt

        @contextlib.contextmanager
        def reporting():
            yield progress

        monkeypatch.setattr(export_command, "progress", reporting)
        return seen

    return arm


@pytest.mark.parametrize("step", [
    "building the network",
    "writing the ONNX graph: body[1]",  # between two stages' nodes
    "writing the file",
    "opening the file in onnxruntime",
    "verifying batch 4 at",
    "checking the file with onnx.checker",
])
def test_ctrl_c_at_each_step_leaves_nothing(tmp_path, interrupt_at, step):
    seen = interrupt_at(step)
    result = _export(TUTORIAL, "--onnx", str(tmp_path / "x.onnx"), "--provider", "cpu", "--report",
                     str(tmp_path / "r.json"))
    assert seen[-1].startswith(step), seen
    assert (result.exit_code, result.output) == (130, "interrupted\n")
    assert _listing(tmp_path) == []


def test_ctrl_c_inside_an_emitter_leaves_nothing(tmp_path, monkeypatch):
    def interrupted(*_args):
        raise KeyboardInterrupt

    monkeypatch.setitem(EMITTERS, "transition", interrupted)
    result = _export(TUTORIAL, "--onnx", str(tmp_path / "x.onnx"), "--provider", "cpu")
    assert (result.exit_code, result.output) == (130, "interrupted\n")
    assert _listing(tmp_path) == []


# A child that stops at a chosen point of a real export, says so on stderr, and waits there
# (in the emitters, or in the dynamo exporter's trace of the network): the test sends SIGINT
# only once the child is known to be mid-export, whatever the machine's load.
_CHILD = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whatever the parent ignores
from archspec import blocks
from archspec.cli import main
from archspec.exporters import emitters

def stop(original):
    def stopped(*args, **kwargs):
        print("child: mid-export", file=sys.stderr, flush=True)
        time.sleep(600)  # SIGINT ends this with KeyboardInterrupt
        return original(*args, **kwargs)
    return stopped

if sys.argv[1] == "archspec":
    emitters.EMITTERS["transition"] = stop(emitters.EMITTERS["transition"])
else:
    blocks.DenseLayer.new_features = stop(blocks.DenseLayer.new_features)
main(["export", sys.argv[2], "--onnx", sys.argv[3], "--provider", "cpu", "--exporter", sys.argv[1]])
"""


@pytest.mark.parametrize("exporter", ["archspec", "torch"])
def test_sigint_mid_export_leaves_nothing(tmp_path, exporter):
    out = tmp_path / "tutorial.onnx"
    process = subprocess.Popen([sys.executable, "-c", _CHILD, exporter, TUTORIAL, str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        marker = process.stderr.readline()  # blocks until the child is inside the export (or dies)
        assert marker == "child: mid-export\n", marker + process.stderr.read()
        (temporary,) = tmp_path.iterdir()
        assert re.fullmatch(r"\.tutorial\.onnx\.[0-9a-f]{8}\.tmp", temporary.name)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=300)
        assert (process.returncode, stdout, stderr) == (130, "", "interrupted\n")
        assert _listing(tmp_path) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
