"""The memory-efficient dense layer: same numbers as the naive one, far fewer stored activations."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torchvision

import archspec
from archspec import blocks
from tests.conftest import ROOT
from tests.nontrivial import randomize_state, relative_error

TUTORIAL = ROOT / "specs" / "tutorial.yaml"
DENSENET121 = ROOT / "specs" / "densenet121.yaml"
# DenseNet-121's bottleneck layers with two per block, small enough for a unit test.
SMALL_BC = tuple(f"body[{i}].num_layers=2" for i in (0, 2, 4, 6))

CASES = {
    "tutorial": (TUTORIAL, (), (2, 1, 32, 32)),
    "bottleneck": (DENSENET121, SMALL_BC, (2, 3, 32, 32)),
    "bottleneck-dropout": (DENSENET121, (*SMALL_BC, "defaults.drop_rate=0.2"), (2, 3, 32, 32)),
    # Shared storage in 3D, with a norm and an activation that are not BatchNorm and ReLU.
    "volume-groupnorm-gelu": (ROOT / "specs" / "monai" / "densenet121_3d.yaml",
                              (*SMALL_BC, "defaults.norm={type: group_norm, groups: 8}", "defaults.activation=gelu",
                               "input.depth=32", "input.height=32", "input.width=32"), (2, 1, 32, 32, 32)),
    "signal-instancenorm-dropout": (DENSENET121, (*SMALL_BC, "input={type: signal, channels: 2, length: 128}", "preprocess=null",
                                                  "defaults.norm=instance_norm", "defaults.drop_rate=0.1"),
                                    (2, 2, 128)),
    # A deep stem ending in a blur pool, recomputed in backward like the blocks.
    "deep-stem-blur": (ROOT / "specs" / "timm" / "densenetblur121d.yaml", (*SMALL_BC, "input.height=32", "input.width=32"),
                       (2, 3, 32, 32)),
    "tabular": (ROOT / "specs" / "mlp_tabular.yaml", (), (4, 330)),
    # No norm before the transition's ReLU: it must not overwrite the block's saved output.
    "transition-without-norm": (TUTORIAL, ("body[1].norm=none",), (2, 1, 32, 32)),
    # Segmentation: blocks that output their new features only, skips read twice (the block's
    # output by the transition down and by the concatenation), dropout everywhere.
    "fc-densenet": (ROOT / "specs" / "segmentation" / "fc_densenet56.yaml", ("input.height=32", "input.width=32"),
                    (2, 3, 32, 32)),
    "unet-skips-inside-transitions": (ROOT / "specs" / "segmentation" / "unet_densenet121.yaml",
                                      (*SMALL_BC, "input.height=32", "input.width=32"), (2, 3, 32, 32)),
}


def _pair(path, overrides, device="cpu"):
    """The naive network and its memory-efficient twin, holding the same weights."""
    torch.manual_seed(0)
    naive = randomize_state(archspec.build(path, overrides=(*overrides, "defaults.memory_efficient=false")))
    efficient = archspec.build(path, overrides=(*overrides, "defaults.memory_efficient=true"))
    efficient.load_state_dict(naive.state_dict(), strict=True)
    return naive.to(device), efficient.to(device)


def _train_step(model, images):
    """One forward and backward in training mode with a fixed RNG (dropout masks alike)."""
    torch.manual_seed(1)
    out = model.train()(images)
    out.square().sum().backward()
    return out


DEVICES = ("cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")))


@pytest.fixture
def deterministic_kernels(monkeypatch):
    """cuDNN's and CUDA's deterministic kernels, so that two runs of the same network agree
    bit for bit (their default weight-gradient and pooling kernels add in a racing order).
    Yields the warnings recorded meanwhile: torch warns of kernels with no deterministic form."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    was = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
    torch.use_deterministic_algorithms(was[0], warn_only=was[1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES)
def test_outputs_gradients_and_running_stats_equal_naive(case, device, deterministic_kernels):
    path, overrides, shape = CASES[case]
    naive, efficient = _pair(path, overrides, device)
    images = torch.randn(shape, device=device)
    outputs = _train_step(naive, images), _train_step(efficient, images)
    # Bit-identical: recomputation replays the same kernels on the same inputs. Where a
    # kernel adds in a racing order (CUDA's 3D pools' backward: torch warns), two naive
    # runs differ too, so gradients may differ in the last bits.
    racing = [w for w in deterministic_kernels if "does not have a deterministic implementation" in str(w.message)]
    same = (lambda a, b: relative_error(a, b) <= 1e-6) if racing else torch.equal
    assert torch.equal(*outputs), "outputs differ"
    for (name, a), b in zip(naive.named_parameters(), efficient.parameters()):
        assert same(a.grad, b.grad), f"{name}.grad differs by up to {(a.grad - b.grad).abs().max():.1e}"
    for (name, a), (_, b) in zip(naive.named_buffers(), efficient.named_buffers()):
        # Recomputation runs each BatchNorm a second time; its statistics must not move twice.
        assert torch.equal(a, b), f"{name} differs by up to {(a.double() - b.double()).abs().max():.1e}"
    tracked = {b.item() for n, b in efficient.named_buffers() if n.endswith("num_batches_tracked")}
    assert tracked <= {1}, "one step counts one batch (group and instance norms count none)"


def test_dropout_masks_are_replayed_not_redrawn():
    path, overrides, shape = CASES["bottleneck-dropout"]
    _, efficient = _pair(path, overrides)
    images = torch.randn(shape)
    first = _train_step(efficient, images)
    second = _train_step(efficient, images)  # same seed, weights unchanged (no optimiser step)
    assert torch.equal(first, second)


def _saved_bytes(model, images) -> int:
    """Bytes of distinct activation storages autograd keeps for backward after one forward
    (parameters and buffers, which exist anyway, left out)."""
    storages: dict[int, int] = {}
    state = {tensor.untyped_storage().data_ptr() for tensor in model.state_dict().values()}

    def pack(tensor):
        if tensor.untyped_storage().data_ptr() not in state:
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model.train()(images)
    return sum(storages.values())


def test_stores_a_quarter_of_naive_activations_on_the_tutorial():
    naive, efficient = _pair(TUTORIAL, ())
    images = torch.randn(2, 1, 32, 32)
    naive_bytes, efficient_bytes = _saved_bytes(naive, images), _saved_bytes(efficient, images)
    # Measured by this function (tutorial, batch 2, 32×32): what is left in the efficient mode is
    # the input, the transitions and each block's output, which holds its features once.
    assert (naive_bytes, efficient_bytes) == (1_362_816, 358_016)


def test_a_recomputed_stem_keeps_its_input_alone():
    naive, efficient = _pair(TUTORIAL, ())
    kept = archspec.build(TUTORIAL, overrides=("defaults.memory_efficient=true", "stem.memory_efficient=false"))
    images = torch.randn(2, 1, 32, 32)
    # The stem's 7×7/2 conv gives 64×16×16 maps; norm0 saves them and its batch mean and
    # inverse deviation, the in-place relu0 its output, and pool0 its 64×8×8 int64 indices.
    stem = 2 * (2 * 64 * 16 * 16 * 4 + 64 * 8 * 8 * 8) + 2 * 64 * 4
    assert _saved_bytes(kept, images) - _saved_bytes(efficient, images) == stem


def test_a_module_replaced_after_building_is_the_one_trained():
    # With a recomputed stem, training runs features in groups; they are formed from the
    # modules held at each forward, not a snapshot taken when the network was built.
    _, efficient = _pair(TUTORIAL, ())
    calls = []
    efficient.features.norm5 = torch.nn.Identity()
    efficient.features.norm5.register_forward_hook(lambda *_: calls.append("norm5"))
    efficient.features.conv0 = torch.nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
    efficient.features.conv0.register_forward_hook(lambda *_: calls.append("conv0"))
    efficient.train()(torch.randn(2, 1, 32, 32)).sum().backward()
    assert calls == ["conv0", "norm5", "conv0"]  # conv0 again in the stem's recomputation


def test_eval_and_no_grad_take_the_plain_path(monkeypatch):
    naive, efficient = _pair(TUTORIAL, ())
    calls = []
    real = blocks._SharedStorage.apply
    monkeypatch.setattr(blocks._SharedStorage, "apply", lambda *a: calls.append(1) or real(*a))
    images = torch.randn(2, 1, 32, 32)
    assert torch.equal(efficient.eval()(images), naive.eval()(images))
    with torch.no_grad():
        efficient.train()(images)
    assert calls == []
    efficient.train()(images)
    assert len(calls) == 4  # four blocks, each writing its features into one shared buffer


def test_exported_program_is_the_same_in_both_modes():
    naive, efficient = _pair(DENSENET121, tuple(f"body[{i}].num_layers=1" for i in (0, 2, 4, 6)))
    example = (torch.randn(1, 3, 32, 32),)
    graphs = [str(torch.export.export(m.eval(), example).graph) for m in (naive, efficient)]
    assert graphs[0] == graphs[1]
    assert "checkpoint" not in graphs[1]


def test_state_dict_keys_match_torchvision_in_both_modes():
    naive, efficient = _pair(DENSENET121, SMALL_BC)
    reference = torchvision.models.DenseNet(32, (2, 2, 2, 2), 64, memory_efficient=True)
    assert list(naive.state_dict()) == list(efficient.state_dict()) == list(reference.state_dict())
    # conv0 + norm0 (6) + 8 layers × (norm1, conv1, norm2, conv2: 12) + 3 transitions × 6
    # + norm5 (5) + classifier (2) = 127, as torchvision's DenseNet(32, (2, 2, 2, 2), 64) has.
    assert len(efficient.state_dict()) == 127


def test_per_block_memory_efficient_overrides_defaults():
    model = archspec.build(
        TUTORIAL,
        overrides=("defaults.memory_efficient=true", "body[2].memory_efficient=false"),
    )
    modes = [
        {layer.memory_efficient for layer in block.values()}
        for name, block in model.features.named_children()
        if name.startswith("denseblock")
    ]
    assert modes == [{True}, {False}, {True}, {True}]


def test_running_stats_guard_restores_every_batch_norm_buffer():
    layer = blocks.DenseLayer(in_width=8, growth_rate=4, bn_size=2, drop_rate=0.0,
                              memory_efficient=True, bias=False, dims=2, kernel_size=3,
                              norm_act=blocks.NormAct(norm="batch_norm", activation="relu"))
    guard = blocks._KeepRunningStats(layer)
    before = copy.deepcopy(layer.state_dict())
    with guard:
        layer.train()([torch.randn(2, 8, 5, 5)])
    assert len(guard.buffers) == 6  # norm1 and norm2: running mean, variance, batch count
    assert all(torch.equal(before[k], v) for k, v in layer.state_dict().items())
