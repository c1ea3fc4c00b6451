"""The training-memory model: exact per-stage counts, agreement with what autograd saves,
the closed-form largest batch, and memory sizes read and written."""

from __future__ import annotations

import pytest
import torch

import archspec
from archspec.errors import SpecError
from archspec.format.memory import estimate, forward_activation_bytes, stage_activations
from archspec.format.sizes import format_bytes, parse_bytes
from tests.conftest import ROOT

# A small DenseNet-BC with dropout: bottleneck layers, max-pool stem, every stored kind.
SMALL_BC = {
    "archspec": 1,
    "name": "small_bc",
    "input": {"type": "image", "channels": 3, "height": 32, "width": 32},
    "stem": {"type": "conv_stem", "out_channels": 16},
    "defaults": {"growth_rate": 8, "bn_size": 4, "drop_rate": 0.2},
    "body": [
        {"type": "dense_block", "num_layers": 3},
        {"type": "transition"},
        {"type": "dense_block", "num_layers": 2},
    ],
    "head": {"type": "classifier", "num_classes": 5},
}


def _tutorial() -> archspec.Spec:
    return archspec.load_spec(ROOT / "specs" / "tutorial.yaml")


def test_tutorial_stem_counts_input_conv_norm_and_pool_indices() -> None:
    # 1×96×96 input (9,216) saved by conv0; conv0 output 64×48×48 (147,456) saved by norm0;
    # norm0's output, ReLU'd in place, saved by pool0 (147,456) with its int64 indices
    # for 64×24×24 outputs (2 × 36,864 float32 values): 377,856 values.
    stem = stage_activations(archspec.static_pass(_tutorial()), memory_efficient=False)[0]
    assert (stem.path, stem.stored, stem.working) == ("stem", 377_856, 0)
    # Memory-efficient, it keeps the input alone and holds the rest again in its backward.
    stem = stage_activations(archspec.static_pass(_tutorial()), memory_efficient=True)[0]
    assert (stem.stored, stem.working) == (9_216, 377_856 - 9_216)


def test_tutorial_first_block_naive_and_memory_efficient() -> None:
    # Layers read 64, 96, 128, 160 channels at 24×24: each keeps its concatenation and
    # its normalised copy, 2 × 448 × 576 = 516,096; plus the 192×24×24 output (110,592).
    naive = stage_activations(archspec.static_pass(_tutorial()), memory_efficient=False)[1]
    assert (naive.stored, naive.working) == (516_096 + 110_592, 2 * 110_592)
    # Memory-efficient (shared storage): only the output, which holds every feature map once;
    # the backward pass holds the output's gradient (accumulated in place) and the last layer
    # recomputed from a contiguous copy of its 160-channel input (the copy, the norm's input,
    # the convolution's input, the copy's gradient and the gradient through the norm: 5 × 160 × 576).
    efficient = stage_activations(archspec.static_pass(_tutorial()), memory_efficient=True)[1]
    assert (efficient.stored, efficient.working) == (110_592, 110_592 + 5 * 160 * 576)


def test_estimate_totals_for_reference_specs() -> None:
    tutorial = estimate(_tutorial(), mode="naive")
    assert (tutorial.params, tutorial.activations_per_sample, tutorial.working_per_sample) == (
        758_226, 6_005_792, 7_936,
    )
    dense = archspec.load_spec(ROOT / "specs" / "densenet121.yaml")
    efficient = estimate(dense, mode="memory_efficient", optimizer="adam")
    # The memory-efficient stem keeps its input alone: not conv0's 64×112×112 output, relu0's
    # output and pool0's int64 indices for 64×56×56 (2,007,040 values, 8,028,160 B), which
    # the estimate counted at 23,085,056 B per sample while the stem stored them.
    assert (efficient.activations_per_sample, efficient.working_per_sample) == (23_085_056 - 8_028_160, 9_228_288)
    # Adam keeps two moments per parameter: 2 × 7,978,856 × 4 bytes.
    assert efficient.optimizer_state == 63_830_848
    assert efficient.fixed == 4 * 7_978_856 * 4
    assert efficient.total(32) == efficient.fixed + 32 * (15_056_896 + 9_228_288)


def _saved_bytes(spec: archspec.Spec, batch: int) -> int:
    """Bytes of distinct tensors autograd saves in one forward pass that grow with the batch.

    Left out: parameters and buffers, and BatchNorm's per-channel batch mean and inverse
    standard deviation (1-D, two values per channel whatever the batch).
    """
    model = archspec.build(spec).train()
    weights = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights and tensor.dim() > 1:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    torch.manual_seed(0)
    x = torch.randn(batch, *archspec.static_pass(spec).input_shape)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(x)
    return sum(saved.values())


# Segmentation at 32×32 (FC-DenseNet56's five poolings leave 1×1): skips read across the U,
# blocks that output their new features (a view of the shared buffer when memory-efficient),
# transposed convolutions, the U-Net decoder and per-position heads.
SEGMENTATION = {
    "fc_densenet56": ("input.height=32", "input.width=32"),
    "unet_densenet121": (*(f"body[{i}].num_layers=2" for i in (0, 2, 4, 6)), "input.height=32", "input.width=32"),
}


@pytest.mark.parametrize(("name", "mode"), [
    *((name, mode) for name in ("tutorial", "mlp_tabular", "small_bc", "fc_densenet56")
      for mode in ("naive", "memory_efficient")),
    # A recomputed stem whose activation is a skip is cut there: the pool's checkpoint keeps that map.
    ("unet_densenet121", "naive"), ("unet_densenet121", "memory_efficient"),
])
def test_stored_activations_match_what_autograd_saves(name: str, mode: str) -> None:
    source = SMALL_BC if name == "small_bc" else ROOT / "specs" / f"{name}.yaml"
    if name in SEGMENTATION:
        source = ROOT / "specs" / "segmentation" / f"{name}.yaml"
    flag = str(mode == "memory_efficient").lower()
    spec = archspec.load_spec(source, (*SEGMENTATION.get(name, ()), f"defaults.memory_efficient={flag}"))
    batch = 4
    counted = batch * estimate(spec, mode=mode).activations_per_sample
    saved = _saved_bytes(spec, batch)
    # The model leaves out only the logits and the loss's few values per sample.
    assert abs(counted - saved) / saved < 0.01, (counted, saved)
    assert forward_activation_bytes(archspec.static_pass(spec), batch) == counted


def test_largest_batch_is_the_last_that_fits() -> None:
    found = estimate(_tutorial(), mode="naive")
    budget = 2 * 1024**3
    largest = found.largest_batch(budget)
    assert largest == 356  # (2 GiB - 2 × 758,226 × 4 B) // (6,005,792 + 7,936) B
    assert found.total(largest) <= budget < found.total(largest + 1)
    assert found.largest_batch(found.fixed) == 0


@pytest.mark.parametrize(
    ("text", "size"),
    [("4GiB", 4 * 1024**3), ("512 MiB", 512 * 1024**2), ("2GB", 2_000_000_000), ("1.5kib", 1536),
     ("100", 100)],
)
def test_parse_bytes(text: str, size: int) -> None:
    assert parse_bytes(text, option="--memory") == size


@pytest.mark.parametrize("text", ["4 GiBs", "", "-1GiB", "0", "lots"])
def test_parse_bytes_refuses_with_the_option_named(text: str) -> None:
    with pytest.raises(SpecError) as error:
        parse_bytes(text, option="--memory")
    assert str(error.value) == f"--memory: expected a memory size such as 4GiB or 512MiB, got {text!r}"


def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (5, 1536, 1_320_702_443, 3 * 1024**4)] == [
        "5 B", "1.50 KiB", "1.23 GiB", "3.00 TiB",
    ]


def test_the_mode_overrides_the_stem_and_blocks_own_flags() -> None:
    # fit compares the two modes whatever the spec says; the stem follows the column too.
    for flag in ("true", "false"):
        flagged = archspec.load_spec(ROOT / "specs" / "tutorial.yaml",
                                     (f"stem.memory_efficient={flag}", f"body[0].memory_efficient={flag}"))
        for mode in ("naive", "memory_efficient"):
            assert estimate(flagged, mode=mode) == estimate(_tutorial(), mode=mode), (flag, mode)


def test_named_outputs_hold_their_gradients_back_to_their_stage() -> None:
    # A map named as an output gets its gradient from the loss, before the backward pass
    # reaches the map's own stage: it is held through every later stage.
    from archspec.format.memory import skip_gradients

    plain = archspec.load_spec(ROOT / "specs" / "tutorial.yaml")
    tapped = archspec.load_spec(ROOT / "specs" / "tutorial.yaml",
                                ["outputs=[{name: early, at: 'body[0]'}, {name: logits, at: head}]"])
    result = archspec.static_pass(tapped)
    early = 192 * 24 * 24  # the tutorial's first dense block: 192 channels at 24×24
    assert skip_gradients(archspec.static_pass(plain)) == (0,) * len(result.stages)
    assert skip_gradients(result) == (0, 0, *(early,) * (len(result.stages) - 2))
    more = estimate(tapped, mode="naive").per_sample - estimate(plain, mode="naive").per_sample
    assert 0 < more <= early * 4  # at most the held gradient's bytes, where it raises the peak
