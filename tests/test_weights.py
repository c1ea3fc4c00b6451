"""Weights files: strict loading with readable diffs, other libraries' key names, hostile files."""

from __future__ import annotations

import pickle
from pathlib import Path

import monai
import pytest
import timm
import torch
import torchvision
from click.testing import CliRunner
from safetensors.torch import save_file
from timm.layers import BlurPool2d
from timm.models.densenet import DenseNet as TimmDenseNet

import archspec
from archspec.cli import main
from archspec.weights import remap_keys
from tests.conftest import ROOT
from tests.nontrivial import assert_matches, randomize_state

TUTORIAL = ROOT / "specs" / "tutorial.yaml"
DENSENET121 = ROOT / "specs" / "densenet121.yaml"
MONAI_3D = ROOT / "specs" / "monai" / "densenet121_3d.yaml"
TOLERANCE = 1e-5  # relative to the largest output: float32 sums in another order, nothing more


@pytest.fixture(scope="module")
def tutorial_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return randomize_state(archspec.build(TUTORIAL)).state_dict()


def _refusal(path: Path, *, spec: Path = TUTORIAL, overrides: tuple[str, ...] = ()) -> list[str]:
    """The problems ``load_weights`` reports, as the CLI prints them."""
    with pytest.raises(archspec.SpecError) as caught:
        archspec.load_weights(archspec.build(spec, overrides=overrides), path)
    assert all(problem.file == str(path) for problem in caught.value.problems)
    return [str(problem) for problem in caught.value.problems]


def test_pt_and_safetensors_round_trip(tmp_path, tutorial_state):
    torch.save(tutorial_state, tmp_path / "w.pt")
    save_file({k: v.contiguous() for k, v in tutorial_state.items()}, tmp_path / "w.safetensors")
    for name in ("w.pt", "w.safetensors"):
        model = archspec.load_weights(archspec.build(TUTORIAL), tmp_path / name)
        loaded = model.state_dict()
        # conv0 2, norm0 4, 16 layers × 6, 3 transitions × 6, norm5 4, classifier 2 = 126 tensors,
        # plus num_batches_tracked of the 21 batch norms
        assert len(loaded) == len(tutorial_state) == 147, name
        assert all(torch.equal(loaded[k], v) for k, v in tutorial_state.items()), name


def test_torchvision_legacy_keys_load(tmp_path):
    torch.manual_seed(0)
    reference = randomize_state(torchvision.models.densenet121()).eval()
    state = reference.state_dict()
    # The pre-0.4 style: `denselayer1.norm.1.weight`; such checkpoints had no num_batches_tracked.
    legacy = {
        key.replace(".norm1.", ".norm.1.").replace(".conv1.", ".conv.1.")
        .replace(".norm2.", ".norm.2.").replace(".conv2.", ".conv.2."): value
        for key, value in state.items()
        if not key.endswith("num_batches_tracked")
    }
    renamed = [key for key in legacy if ".norm.1." in key or ".conv.2." in key
               or ".norm.2." in key or ".conv.1." in key]
    # 58 dense layers × (norm1: 4, conv1: 1, norm2: 4, conv2: 1) tensors
    assert len(renamed) == 580
    assert set(remap_keys(legacy).state) == {k for k in state if not k.endswith("num_batches_tracked")}
    torch.save(legacy, tmp_path / "legacy.pth")

    model = archspec.load_weights(archspec.build(DENSENET121), tmp_path / "legacy.pth").eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_legacy_format_loads_and_from_weights_reads_its_headers(tmp_path, tutorial_state):
    # torch.save before PyTorch 1.6 (torchvision's published DenseNet files): read whole, within budget
    path = tmp_path / "legacy.pth"
    torch.save(tutorial_state, path, _use_new_zipfile_serialization=False)
    loaded = archspec.load_weights(archspec.build(TUTORIAL), path).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in tutorial_state.items())
    # from-weights reads it with torch's skip_data: shapes, no values; the spec has the tutorial's parameters
    assert "# 758,226 parameters in 147 tensors." in archspec.spec_from_weights(path)


def test_wrong_shapes_refused_with_diff(tmp_path, tutorial_state):
    torch.save(tutorial_state, tmp_path / "w.pt")
    path = tmp_path / "w.pt"
    # classifier reads 248 features (tutorial.yaml: last block width); 5 classes instead of 10
    assert _refusal(path, overrides=("head.num_classes=5",)) == [
        f"{path}: 2 shape mismatches: classifier.weight (file (10, 248), model (5, 248)), "
        "classifier.bias (file (10), model (5)); to fine-tune another output layer, skip the file's (--skip-head, skip_head=True)"
    ]


def test_missing_and_unexpected_keys_listed_and_counted(tmp_path, tutorial_state):
    state = {k: v for k, v in tutorial_state.items() if not k.startswith("features.denseblock4")}
    state.update({f"extra.{i}": torch.zeros(1) for i in range(7)})
    path = tmp_path / "w.pt"
    torch.save(state, path)
    # denseblock4: 4 layers × (norm: 4, conv: 2) tensors = 24 (num_batches_tracked may be absent)
    assert _refusal(path) == [
        f"{path}: 24 missing keys: features.denseblock4.denselayer1.norm.weight, "
        "features.denseblock4.denselayer1.norm.bias, features.denseblock4.denselayer1.norm.running_mean, "
        "features.denseblock4.denselayer1.norm.running_var, features.denseblock4.denselayer1.conv.weight, "
        "… and 19 more",
        f"{path}: 7 unexpected keys: extra.0, extra.1, extra.2, extra.3, extra.4, … and 2 more",
    ]


def test_nan_and_inf_reported(tmp_path, tutorial_state):
    state = dict(tutorial_state)
    state["features.conv0.weight"] = state["features.conv0.weight"].clone()
    state["features.conv0.weight"][0, 0, 0, 0] = float("nan")
    state["classifier.bias"] = torch.full((10,), float("inf"))
    path = tmp_path / "w.pt"
    torch.save(state, path)
    assert _refusal(path) == [
        f"{path}: 2 tensors with NaN or inf values: features.conv0.weight, classifier.bias"
    ]


def test_sparse_and_complex_tensors_refused(tmp_path, tutorial_state):
    state = dict(tutorial_state)
    state["classifier.bias"] = state["classifier.bias"].to_sparse()
    state["features.norm5.weight"] = state["features.norm5.weight"].to(torch.complex64)
    path = tmp_path / "w.pt"
    torch.save(state, path)
    assert _refusal(path) == [
        f"{path}: 2 tensors that are not dense real tensors: features.norm5.weight (complex), "
        "classifier.bias (sparse_coo)"
    ]


class _RunsCode:
    """Unpickling this would create ``marker``: the classic code-execution payload, made harmless."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_pickle_that_runs_code_is_refused_and_does_not_run(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"features.conv0.weight": _RunsCode(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))  # torch.load reads protocol 2 plain pickles
    expected = (
        "cannot load weights: refused by torch.load(weights_only=True): "
        "Unsupported global: GLOBAL io.open was not an allowed global by default"
        if writer == "torch.save"
        # a plain pickle is not torch.save's format: refused by its first bytes, never unpickled
        else "not a weights file: a PyTorch checkpoint (torch.save) or a safetensors file was expected "
        "(it looks like a plain pickle, not torch.save's format)"
    )
    assert _refusal(path) == [f"{path}: {expected}"]
    assert not marker.exists()


def test_truncated_random_and_empty_files_refused(tmp_path, tutorial_state):
    whole = tmp_path / "whole.pt"
    torch.save(tutorial_state, whole)
    (tmp_path / "truncated.pt").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    # a pickle's first bytes without torch.save's magic number: refused unread
    (tmp_path / "random.pth").write_bytes(b"\x80\x02g" + bytes(range(256)) * 16)
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "random.safetensors").write_bytes(b"\xff" * 64)
    expected = {
        "truncated.pt": "truncated or corrupt checkpoint: the zip directory at the end of the file is "
        "missing or damaged (was it cut short?)",
        "random.pth": "not a weights file: a PyTorch checkpoint (torch.save) or a safetensors file was "
        "expected (it looks like a plain pickle, not torch.save's format)",
        "empty.pt": "weights file is empty",
        "random.safetensors": "not a weights file: a PyTorch checkpoint (torch.save) or a safetensors file "
        "was expected",
    }
    for name, message in expected.items():
        assert _refusal(tmp_path / name) == [f"{tmp_path / name}: {message}"]


def test_directory_missing_file_and_non_state_dict(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    assert _refusal(tmp_path) == [f"{tmp_path}: weights file is a directory"]
    assert _refusal(tmp_path / "nope.pt") == [f"{tmp_path / 'nope.pt'}: weights file does not exist"]
    assert _refusal(tmp_path / "list.pt") == [
        f"{tmp_path / 'list.pt'}: not a state dict (a mapping of names to tensors); found list"
    ]


def test_build_cli_weights(tmp_path, tutorial_state):
    torch.save(tutorial_state, tmp_path / "w.pt")
    runner = CliRunner()
    ok = runner.invoke(main, ["build", str(TUTORIAL), "--weights", str(tmp_path / "w.pt")])
    assert ok.exit_code == 0, ok.output
    # tutorial.yaml: 758,226 parameters in 147 tensors (with the norms' statistics), 10 classes
    assert ok.output == (f"loaded {tmp_path / 'w.pt'}: 147 tensors, 758,226 parameters\n"
                         "tutorial: 758,226 parameters, input (1, 1, 96, 96) -> output (1, 10)\n")

    fine_tuned = runner.invoke(main, ["build", str(TUTORIAL), "--set", "head.num_classes=5", "--weights",
                                      str(tmp_path / "w.pt"), "--skip-head"])
    assert (fine_tuned.exit_code, fine_tuned.output) == (0, (
        f"loaded {tmp_path / 'w.pt'}: 145 tensors, 755,736 parameters\n"  # less the 248×10 + 10 of the head
        "skipped the file's classifier.weight, classifier.bias; classifier.weight, classifier.bias stay "
        "freshly initialised\n"
        "tutorial: 756,981 parameters, input (1, 1, 96, 96) -> output (1, 5)\n"))  # 248×5 + 5 fresh

    bad = runner.invoke(main, ["build", str(TUTORIAL), "--set", "head.num_classes=5",
                               "--weights", str(tmp_path / "w.pt")])
    assert bad.exit_code == 2
    assert bad.output == (
        f"{tmp_path / 'w.pt'}: 2 shape mismatches: classifier.weight (file (10, 248), model (5, 248)), "
        "classifier.bias (file (10), model (5)); to fine-tune another output layer, skip the file's (--skip-head, skip_head=True)\n"
    )


# --- Other libraries' key names -------------------------------------------------------------

def _timm_deep_blur() -> torch.nn.Module:
    # timm's deep_tiered stem for growth 8: widths 3·(8//4)=6, 6·(8//4)=12, 2·8=16; blur only in the stem.
    return TimmDenseNet(growth_rate=8, block_config=(2, 3, 2, 2), stem_type="deep_tiered", num_classes=10,
                        aa_layer=BlurPool2d)


TIMM_DEEP_BLUR_SPEC = {
    "archspec": 1, "name": "timm_deep_blur",
    "input": {"type": "image", "channels": 3, "height": 64, "width": 64},
    "stem": {"type": "deep_stem", "widths": [6, 12, 16], "pool": "blur"},
    "defaults": {"growth_rate": 8, "bn_size": 4},
    "body": [{"type": "dense_block", "num_layers": 2}, {"type": "transition"},
             {"type": "dense_block", "num_layers": 3}, {"type": "transition"},
             {"type": "dense_block", "num_layers": 2}, {"type": "transition"},
             {"type": "dense_block", "num_layers": 2}],
    "head": {"type": "classifier", "num_classes": 10},
}

# (reference network, its archspec spec, input batch): each library's checkpoint, loaded by name mapping.
LIBRARIES = {
    "monai_2d": (lambda: monai.networks.nets.DenseNet121(spatial_dims=2, in_channels=3, out_channels=1000),
                 DENSENET121, (2, 3, 64, 64)),
    "monai_3d": (lambda: monai.networks.nets.DenseNet121(spatial_dims=3, in_channels=1, out_channels=2),
                 MONAI_3D, (2, 1, 32, 32, 32)),
    "timm_densenet121": (lambda: timm.create_model("densenet121", pretrained=False), DENSENET121, (2, 3, 64, 64)),
    "timm_deep_blur": (_timm_deep_blur, TIMM_DEEP_BLUR_SPEC, (2, 3, 64, 64)),
}


@pytest.mark.parametrize("name", sorted(LIBRARIES))
def test_other_libraries_checkpoints_load_and_match(tmp_path, name):
    make, spec, shape = LIBRARIES[name]
    torch.manual_seed(0)
    reference = randomize_state(make()).eval()
    path = tmp_path / f"{name}.pt"
    torch.save(reference.state_dict(), path)

    model = archspec.load_weights(archspec.build(spec), path).eval()
    assert_matches(model, reference, shape, TOLERANCE, name)


@pytest.mark.parametrize("name", ["monai_2d", "timm_densenet121"])
def test_other_libraries_checkpoints_load_through_the_cli(tmp_path, name):
    make, spec, _ = LIBRARIES[name]
    torch.manual_seed(0)
    torch.save(randomize_state(make()).state_dict(), tmp_path / "w.pt")
    result = CliRunner().invoke(main, ["build", str(spec), "--weights", str(tmp_path / "w.pt")])
    assert result.exit_code == 0, result.output
    # densenet121.yaml: 7,978,856 parameters (torchvision), 1000 classes
    assert result.output == (f"loaded {tmp_path / 'w.pt'}: 727 tensors, 7,978,856 parameters\n"
                             "densenet121: 7,978,856 parameters, input (1, 3, 224, 224) -> output (1, 1000)\n")


def test_monai_3d_checkpoint_loads_through_the_cli(tmp_path):
    torch.manual_seed(0)
    torch.save(randomize_state(LIBRARIES["monai_3d"][0]()).state_dict(), tmp_path / "w.pt")
    result = CliRunner().invoke(main, ["build", str(MONAI_3D), "--weights", str(tmp_path / "w.pt")])
    assert result.exit_code == 0, result.output
    # MONAI's DenseNet121(spatial_dims=3, in_channels=1, out_channels=2): 11,244,674 parameters
    assert result.output == (f"loaded {tmp_path / 'w.pt'}: 727 tensors, 11,244,674 parameters\n"
                             "densenet121_3d: 11,244,674 parameters, input (1, 1, 96, 96, 96) -> output (1, 2)\n")


def test_key_map_is_chosen_by_the_keys():
    legacy = {"features.denseblock1.denselayer1.norm.1.weight": torch.ones(1)}
    states = {
        "torchvision": torchvision.models.densenet121().state_dict(),
        "torchvision (before 0.4)": legacy,
        "MONAI": LIBRARIES["monai_2d"][0]().state_dict(),
        "timm": _timm_deep_blur().state_dict(),
    }
    for library, state in states.items():
        renamed = remap_keys(state)
        assert renamed.key_map.library == library
        assert len(renamed.state) == len(state), library
        assert all(renamed.state[key] is state[file_key] for key, file_key in renamed.file_names.items()), library
    # MONAI: 58 dense layers × 12 tensors under `layers` (norm1 5, conv1 1, norm2 5, conv2 1) and
    # class_layers.out's weight and bias are renamed; the 727 keys are torchvision's after it.
    monai_renamed = remap_keys(states["MONAI"])
    assert sum(1 for key, file_key in monai_renamed.file_names.items() if key != file_key) == 58 * 12 + 2
    assert set(monai_renamed.state) == set(states["torchvision"])
    assert monai_renamed.file_names["classifier.weight"] == "class_layers.out.weight"
    assert set(remap_keys(states["timm"]).state) == set(states["timm"])  # timm's names are archspec's


def test_monai_diff_names_keys_as_the_file_does(tmp_path):
    state = LIBRARIES["monai_2d"][0]().state_dict()
    state["class_layers.extra.weight"] = torch.zeros(3)
    del state["features.denseblock4.denselayer16.layers.conv2.weight"]
    path = tmp_path / "monai.pt"
    torch.save(state, path)
    # 1000 classes in the file, 10 in the model; classifier reads 1024 features (densenet121)
    assert _refusal(path, spec=DENSENET121, overrides=("head.num_classes=10",)) == [
        f"{path}: 1 missing key: features.denseblock4.denselayer16.conv2.weight",
        f"{path}: 1 unexpected key: class_layers.extra.weight",
        f"{path}: 2 shape mismatches: class_layers.out.weight (file (1000, 1024), model (10, 1024)), "
        "class_layers.out.bias (file (1000), model (10)); to fine-tune another output layer, skip the file's (--skip-head, skip_head=True)",
        f"{path}: keys read as MONAI's names and renamed to torchvision's",
    ]


def test_keys_that_rename_onto_each_other_are_refused(tmp_path, tutorial_state):
    state = dict(tutorial_state)
    # the tutorial's layers have no bottleneck: `norm.weight` is current, `norm.1` the old style
    state["features.denseblock1.denselayer1.norm1.weight"] = torch.ones(64)
    state["features.denseblock1.denselayer1.norm.1.weight"] = torch.ones(64)
    path = tmp_path / "w.pt"
    torch.save(state, path)
    assert _refusal(path) == [
        f"{path}: 1 unexpected key: features.denseblock1.denselayer1.norm1.weight",
        f"{path}: 1 key that repeats another after renaming: features.denseblock1.denselayer1.norm.1.weight",
        f"{path}: keys read as torchvision (before 0.4)'s names and renamed to torchvision's",
    ]
