"""Hostile weights files: refused by their headers, with memory bounded, measured in a child process.

The files are written at run time into a temporary folder (no binary files in the repository).
One child process runs every case through the CLI in turn and reports, per case, its exit
status, its output and how far its resident memory rose: before each case the child resets its
own peak (``/proc/self/clear_refs``, Linux) and reads ``VmHWM`` after it, so neither the test
process nor another case counts. Before the reading was bounded, ``expanded_unexpected`` peaked
at 4 GiB and ``sparse_safetensors`` at 3.3 GB.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import archspec
from tests import bounded
from tests.conftest import ROOT
from tests.nontrivial import randomize_state

pytestmark = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="measures memory on Linux")

TUTORIAL = ROOT / "specs" / "tutorial.yaml"
# tutorial.yaml's tensors are 3 MB; the CLI's own work for a refused file is a few MB more. Reading
# any of these files whole, or a view of 2**30 elements, costs 1 GiB or more.
BOUND = 100 * 2**20
GIB = 2**30
FLOATS = "float16, bfloat16, float32 or float64 expected"
# The child's CPU time (about 8 s: torch's import and ~20 cases); a FIFO that blocked would be a stall.
CPU_SECONDS = 120

_CHILD = r"""
import json, re, sys
from click.testing import CliRunner
from archspec.cli import main

def status(field):
    with open("/proc/self/status") as lines:
        return 1024 * int(re.search(field + r":\s+(\d+)", lines.read()).group(1))

results = {}
runner = CliRunner()
runner.invoke(main, ["build", sys.argv[2]])  # imports and first-use allocations before any measure
for name, args in json.loads(open(sys.argv[1]).read()).items():
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # the peak (VmHWM) restarts from the current resident size
    before = status("VmRSS")
    result = runner.invoke(main, args)
    results[name] = {"code": result.exit_code, "output": result.output, "rise": status("VmHWM") - before}
print(json.dumps(results))
"""


def _tutorial_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return randomize_state(archspec.build(TUTORIAL)).state_dict()


def _recompressed(source: Path, target: Path) -> None:
    """``source``'s entries, deflated: a zip bomb's form, though this one expands only to the original."""
    with zipfile.ZipFile(source) as reading, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as writing:
        for entry in reading.infolist():
            writing.writestr(entry.filename, reading.read(entry))


def _bomb(source: Path, target: Path) -> None:
    """``source`` with its first storage replaced by 256 MiB of deflated zeros (about 256 KiB)."""
    with zipfile.ZipFile(source) as reading, zipfile.ZipFile(target, "w") as writing:
        for entry in reading.infolist():
            if entry.filename.endswith("/data/0"):
                deflated = zipfile.ZipInfo(entry.filename)
                deflated.compress_type = zipfile.ZIP_DEFLATED
                with writing.open(deflated, "w", force_zip64=True) as bomb:
                    chunk = bytes(2**20)
                    for _ in range(256):
                        bomb.write(chunk)
            else:
                writing.writestr(entry, reading.read(entry))


def _sparse_safetensors(path: Path, state: dict[str, torch.Tensor]) -> None:
    """``state`` plus an unexpected 1 GiB tensor whose bytes are a hole in a sparse file."""
    save_file({key: value.contiguous() for key, value in state.items()}, path)
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + length])
    data = len(raw) - 8 - length
    header["extra"] = {"dtype": "F32", "shape": [2**28], "data_offsets": [data, data + GIB]}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with path.open("wb") as out:
        out.write(len(text).to_bytes(8, "little") + text + raw[8 + length:])
        out.truncate(8 + len(text) + data + GIB)  # a hole: no disk, no time


def _npy_claiming_rows(path: Path) -> None:
    """A .npy header claiming 2**40 rows of float32, and no data."""
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 2), }"
    header += " " * (-(len(header) + 11) % 64) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode())


def _cases(folder: Path) -> dict[str, tuple[list[str], int, str]]:
    """Every case: (CLI arguments, expected exit status, expected output)."""
    state = _tutorial_state()
    files: dict[str, Path] = {}

    def saved(name: str, value: object, **kwargs) -> None:
        files[name] = folder / f"{name}.pt"
        torch.save(value, files[name], **kwargs)

    saved("valid", state)
    huge_view = torch.zeros(1).expand(2**15, 2**15)  # 2**30 elements from 4 stored bytes
    saved("expanded_unexpected", {**state, "extra": huge_view})
    saved("expanded_legacy", {**state, "extra": huge_view}, _use_new_zipfile_serialization=False)
    saved("expanded_expected", {**state, "classifier.weight": torch.zeros(1).expand(10, 248)})
    saved("wrong_dtypes", {**state, "features.conv0.weight": state["features.conv0.weight"].long(),
                           "features.norm0.weight": state["features.norm0.weight"] > 0,
                           "classifier.bias": state["classifier.bias"].to(torch.float8_e4m3fn)})
    saved("meta", {**state, "classifier.weight": torch.empty(10, 248, device="meta")})
    saved("oversized", {**state, "extra": torch.zeros(2**21)})  # 8 MiB more than the 3 MB state
    saved("training_checkpoint", {"epoch": 3, "optimizer_states": [{}],
                                  "state_dict": {f"model.{key}": value for key, value in state.items()}})
    files["compressed"] = folder / "compressed.pt"
    _recompressed(files["valid"], files["compressed"])
    files["bomb"] = folder / "bomb.pt"
    _bomb(files["valid"], files["bomb"])
    files["truncated"] = folder / "truncated.pt"
    files["truncated"].write_bytes(files["valid"].read_bytes()[:100_000])
    files["sparse_safetensors"] = folder / "sparse.safetensors"
    _sparse_safetensors(files["sparse_safetensors"], state)
    files["npy_rows"] = folder / "rows.npy"
    _npy_claiming_rows(files["npy_rows"])
    files["fifo"] = folder / "fifo.pt"
    os.mkfifo(files["fifo"])
    files["dev_zero"] = Path("/dev/zero")

    build = ["build", str(TUTORIAL), "--weights"]
    refused = {
        "expanded_unexpected": "1 unexpected key: extra",
        "expanded_legacy": "1 unexpected key: extra",
        "expanded_expected": "1 tensor stored as a view that repeats its values (zero or overlapping "
                             "strides): classifier.weight (strides (0, 0))",
        "wrong_dtypes": f"3 tensors of a dtype the model cannot take ({FLOATS}): features.conv0.weight "
                        "(int64), features.norm0.weight (bool), classifier.bias (float8_e4m3fn)",
        "meta": "1 tensor saved without values (meta device): classifier.weight",
        # tutorial.yaml's state: 758,226 parameters, 6,608 running statistics and 21 batch counts, at
        # 8 bytes each (6,118,840), and a header allowance of 64 KiB + 1 KiB for each of its 147 tensors
        "oversized": "holds 11,448,163 bytes of data; the model's tensors need at most 6,334,904 "
                     "(every tensor as float64)",
        "training_checkpoint": "a training checkpoint, not a state dict: its 147 tensors are under the key "
                               "'state_dict'; save that mapping alone with torch.save, with the prefix "
                               "model. cut from its keys, and pass that file",
        "compressed": "compressed zip entry valid/data.pkl: torch.save stores entries uncompressed, "
                      "and a compressed one could expand without bound",
        "bomb": "compressed zip entry valid/data/0: torch.save stores entries uncompressed, and a "
                "compressed one could expand without bound",
        "truncated": "truncated or corrupt checkpoint: the zip directory at the end of the file is missing "
                     "or damaged (was it cut short?)",
        "sparse_safetensors": "1 unexpected key: extra",
        "npy_rows": "not a weights file: a PyTorch checkpoint (torch.save) or a safetensors file was "
                    "expected (it looks like a NumPy .npy array)",
        "fifo": "cannot read weights file: a FIFO (named pipe), not a regular file",
        "dev_zero": "cannot read weights file: a character device, not a regular file",
    }
    cases = {name: ([*build, str(files[name])], 2, f"{files[name]}: {message}\n") for name, message in refused.items()}
    cases["valid"] = ([*build, str(files["valid"])], 0,
                      "tutorial: 758,226 parameters, input (1, 1, 96, 96) -> output (1, 10)\n")
    # from-weights reads names, shapes and dtypes only
    cases["from_weights_bomb"] = (["from-weights", str(files["bomb"]), "-o", str(folder / "bomb.yaml")], 2, f"{files['bomb']}: {refused['bomb']}\n")
    cases["from_weights_sparse"] = (
        ["from-weights", str(files["sparse_safetensors"]), "-o", str(folder / "sparse.yaml")], 2,
        f"{files['sparse_safetensors']}: not a DenseNet checkpoint: 1 of 148 keys name no DenseNet module (torchvision's, timm's or "
        "MONAI's names), first: extra\n")
    cases["from_weights_expanded_legacy"] = (
        ["from-weights", str(files["expanded_legacy"]), "-o", str(folder / "legacy.yaml")], 2,
        f"{files['expanded_legacy']}: 1 tensor stored as a view that repeats its values (zero or overlapping strides): extra "
        "(strides (0, 0))\n")
    return cases


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> dict[str, tuple[dict, tuple[list[str], int, str]]]:
    folder = tmp_path_factory.mktemp("hostile_weights")
    cases = _cases(folder)
    (folder / "cases.json").write_text(json.dumps({name: args for name, (args, _, _) in cases.items()}))
    child = bounded.run([sys.executable, "-c", _CHILD, str(folder / "cases.json"), str(TUTORIAL)],
                        cpu_seconds=CPU_SECONDS, cwd=ROOT)
    assert child.returncode == 0, child.stderr[-3000:]
    results = json.loads(child.stdout.splitlines()[-1])
    return {name: (results[name], cases[name]) for name in cases}


CASES = ["valid", "expanded_unexpected", "expanded_legacy", "expanded_expected", "wrong_dtypes", "meta",
         "oversized", "training_checkpoint", "compressed", "bomb", "truncated", "sparse_safetensors",
         "npy_rows", "fifo", "dev_zero", "from_weights_bomb", "from_weights_sparse",
         "from_weights_expanded_legacy"]


@pytest.mark.parametrize("name", CASES)
def test_weights_refused_by_header_within_memory(measured, name):
    result, (args, code, output) = measured[name]
    shown = result["output"] if code else result["output"][result["output"].rfind("\n", 0, -1) + 1:]
    assert (result["code"], shown) == (code, output), name  # a load may be reported above the last line
    assert result["rise"] < BOUND, f"{name}: resident memory rose {result['rise'] / 2**20:.0f} MiB"


def test_every_case_is_checked(measured):
    assert sorted(measured) == sorted(CASES)
