"""The family as practised: timm's and MONAI's DenseNets, the paper's CIFAR and ImageNet nets,
built from those libraries inside the test and compared on non-trivial state; and the whole
vocabulary (1D/2D/3D, norms, activations, stems, pools) through the static pass and the module."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import archspec
from tests.conftest import ROOT
from tests.nontrivial import randomize_state, relative_error

SPECS = ROOT / "specs"


@pytest.mark.parametrize(("name", "params"), [
    ("densenetblur121d", 7_998_088),  # sum(p.numel() for p in timm.create_model(name).parameters())
    ("densenet264d", 72_736_216),
])
def test_timm_variants_load_strictly_and_give_the_same_outputs(name: str, params: int) -> None:
    timm = pytest.importorskip("timm")
    reference = randomize_state(timm.create_model(name, pretrained=False)).eval()
    assert sum(p.numel() for p in reference.parameters()) == params, "timm's own count"
    spec = archspec.load_spec(SPECS / "timm" / f"{name}.yaml", ["input.height=64", "input.width=64"])
    assert archspec.static_pass(spec).params == params
    model = archspec.build(spec).eval()
    assert list(model.state_dict()) == list(reference.state_dict()), "same keys, same order"
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 72, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        error = relative_error(model(x), reference(x))
    assert error <= 1e-5, f"max error {error:.3g} of the largest output"


def test_monai_3d_densenet121_same_parameters_and_outputs(tmp_path) -> None:
    monai_nets = pytest.importorskip("monai.networks.nets")
    torch.manual_seed(0)
    reference = randomize_state(monai_nets.DenseNet121(spatial_dims=3, in_channels=1, out_channels=2)).eval()
    params = sum(p.numel() for p in reference.parameters())
    assert params == 11_244_674  # MONAI's own count, 3D kernels (7³ stem, 3³ dense layers)
    overrides = ["input.depth=32", "input.height=32", "input.width=40"]
    spec = archspec.load_spec(SPECS / "monai" / "densenet121_3d.yaml", overrides)
    assert archspec.static_pass(spec).params == params
    torch.save(reference.state_dict(), tmp_path / "monai.pt")  # MONAI's own key names
    model = archspec.load_weights(archspec.build(spec), tmp_path / "monai.pt").eval()
    x = torch.randn(2, 1, 32, 32, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        error = relative_error(model(x), reference(x))
    assert error <= 1e-5, f"max error {error:.3g} of the largest output"


def _densenet_bc_count(*, depth: int, growth: int, classes: int, channels: int) -> int:
    """DenseNet-BC's parameters counted from the paper's description, layer by layer."""
    layers = (depth - 4) // 6
    width = 2 * growth
    total = channels * width * 9  # the first 3×3 convolution, no bias
    for block in range(3):
        for _ in range(layers):
            total += 2 * width + width * 4 * growth  # BN, 1×1 conv to 4k
            total += 2 * 4 * growth + 4 * growth * growth * 9  # BN, 3×3 conv to k
            width += growth
        if block < 2:
            total += 2 * width + width * (width // 2)  # BN, 1×1 conv halving the channels
            width //= 2
    return total + 2 * width + width * classes + classes  # final BN, linear classifier


def test_classifier_head_on_tabular_input(tmp_path) -> None:
    # A classifier reads the last dense block's 608 features like the regressor does: its norm (2 × 608)
    # and Linear(608, 3) (608 × 3 + 3) replace the regressor's 1,825: 2,878,624 + 3,043 (docs/walkthrough.md).
    overrides = ["head={type: classifier, num_classes: 3}"]
    spec = archspec.load_spec(SPECS / "mlp_tabular.yaml", overrides)
    assert archspec.static_pass(spec).params == 2_881_667
    torch.manual_seed(0)
    model = randomize_state(archspec.build(spec)).eval()
    assert sum(p.numel() for p in model.parameters()) == 2_881_667
    x = torch.randn(4, 330, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
        by_hand = model.forward_head(model.forward_features(x))
    assert logits.shape == (4, 3)
    assert torch.equal(logits, by_hand)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    report = archspec.export_onnx(SPECS / "mlp_tabular.yaml", tmp_path / "t.onnx", overrides=tuple(overrides),
                                  weights=tmp_path / "w.pt", provider="cpu", batch_size=2)
    assert report.written and report.verification.passed and report.output_names == ("logits",), report


def test_cifar_densenet_bc_100_count_from_the_paper() -> None:
    spec = archspec.load_spec(SPECS / "cifar" / "densenet_bc_100.yaml")
    result = archspec.static_pass(spec)
    expected = _densenet_bc_count(depth=100, growth=12, classes=10, channels=3)
    assert result.params == expected == 769_162  # the paper's "0.8M" (table 2)
    # 24 channels in; 24 + 16·12 = 216 → 108 → 300 → 150 → 342 at 8×8 after two 2×2 pools.
    assert [stage.out_shape for stage in result.stages] == [
        (24, 32, 32), (216, 32, 32), (108, 16, 16), (300, 16, 16), (150, 8, 8), (342, 8, 8), (10,),
    ]


def test_densenet264_count_from_the_paper() -> None:
    # Table 1: growth 32, blocks (6, 12, 64, 48), the ImageNet stem and DenseNet-BC layers;
    # counted layer by layer here, independently of the static pass.
    width, total = 64, 3 * 64 * 49 + 2 * 64
    for index, layers in enumerate((6, 12, 64, 48)):
        for _ in range(layers):
            total += 2 * width + width * 128 + 2 * 128 + 128 * 32 * 9
            width += 32
        if index < 3:
            total += 2 * width + width * (width // 2)
            width //= 2
    total += 2 * width + width * 1000 + 1000
    result = archspec.static_pass(archspec.load_spec(SPECS / "densenet264.yaml"))
    assert result.params == total == 33_337_704
    assert result.num_features == 2688  # 64 + ... : the last block's 1,152 + 48·32


# ---- the whole vocabulary: static pass against the built module ---------------------------

NORMS = ["batch_norm", "instance_norm", "none", {"type": "group_norm", "groups": 2}, "group_norm"]
ACTIVATIONS = ["relu", "relu6", "leaky_relu", {"type": "leaky_relu", "negative_slope": 0.2}, "elu",
               "gelu", "silu", "none"]
SIZES = {"signal": ("length",), "image": ("height", "width"), "volume": ("depth", "height", "width")}


@st.composite
def _specs(draw: st.DrawFn) -> dict:
    kind = draw(st.sampled_from(["signal", "image", "volume", "tabular"]))
    growth = draw(st.sampled_from([4, 8]))
    norm = draw(st.sampled_from(NORMS + (["layer_norm"] if kind == "tabular" else [])))
    if norm == "group_norm":
        norm = {"type": "group_norm", "groups": 4}
    defaults = {"growth_rate": growth, "bn_size": draw(st.sampled_from([None, 2])), "norm": norm,
                "activation": draw(st.sampled_from(ACTIVATIONS)), "bias": draw(st.booleans()),
                "drop_rate": draw(st.sampled_from([0.0, 0.1]))}
    blocks = draw(st.integers(1, 3))
    if kind == "tabular":
        spec_input = {"type": "tabular", "features": draw(st.integers(3, 12))}
        stem = {"type": "mlp_stem", "hidden": draw(st.lists(st.sampled_from([8, 16]), min_size=1, max_size=2)),
                "drop_rate": draw(st.sampled_from([0.0, 0.2]))}
        layer, pools = "linear", ["none"]
    else:
        side = {"signal": 64, "image": 24, "volume": 12}[kind]
        spec_input = {"type": kind, "channels": draw(st.integers(1, 3)),
                      **{axis: side + draw(st.integers(0, 5)) for axis in SIZES[kind]}}
        pool = draw(st.sampled_from(["max", "avg", "blur", "none"]))
        if draw(st.booleans()):
            stem = {"type": "conv_stem", "out_channels": 8, "kernel_size": 3, "stride": 1, "padding": 1,
                    "pool": pool}
        else:
            stem = {"type": "deep_stem", "widths": [4, 8, 8], "pool": pool}
        layer, pools = "conv", ["avg", "max", "blur", "none"]
    body: list[dict] = []
    for index in range(blocks):
        block = {"type": "dense_block", "num_layers": draw(st.integers(1, 3)), "layer": layer}
        if layer == "conv":
            block["kernel_size"] = draw(st.sampled_from([1, 3, 5]))
        body.append(block)
        if index < blocks - 1:
            body.append({"type": "transition", "layer": layer, "out_channels": 8,
                         "pool": draw(st.sampled_from(pools)), "drop_rate": draw(st.sampled_from([0.0, 0.1]))})
    head = draw(st.sampled_from([{"type": "classifier", "num_classes": 3}, {"type": "regressor", "out_features": 2}]))
    head["pool"] = draw(st.sampled_from(["avg", "max", "avg_max"]))
    head["drop_rate"] = draw(st.sampled_from([0.0, 0.3]))
    return {"archspec": 1, "name": "drawn", "input": spec_input, "stem": stem, "defaults": defaults,
            "body": body, "head": head}


def _stage_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        modules[names[-1]].register_forward_hook(
            lambda _m, _i, output, path=path: shapes.__setitem__(path, tuple(output.shape[1:])))
        for path, names in model.stage_modules.items() if path != "head"
    ]
    with torch.no_grad():
        shapes["head"] = tuple(model(x).shape[1:])
    for hook in hooks:
        hook.remove()
    return shapes


OUTCOMES: dict[str, int] = {"built": 0, "refused": 0}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_specs())
def test_static_pass_equals_the_module_over_the_vocabulary(document: dict) -> None:
    try:
        spec = archspec.load_spec(document)
    except archspec.SpecError as error:  # e.g. pools that shrink a small input below 1
        assert error.problems and error.path, error
        OUTCOMES["refused"] += 1
        return
    OUTCOMES["built"] += 1
    result = archspec.static_pass(spec)
    model = randomize_state(archspec.build(spec)).eval()
    modules = dict(model.named_modules())
    shapes = _stage_shapes(model, torch.randn(2, *result.input_shape))
    for stage in result.stages:
        params = sum(p.numel() for name in model.stage_modules[stage.path] for p in modules[name].parameters())
        assert params == stage.params, f"{stage.path} ({stage.kind}): module {params}, static {stage.params}"
        assert shapes[stage.path] == stage.out_shape, f"{stage.path} ({stage.kind}): output shape"
    assert sum(p.numel() for p in model.parameters()) == result.params


def test_most_drawn_specs_build() -> None:
    # Runs after the property test in the same process (pytest keeps file order within a worker
    # under --dist loadscope); the strategy is tuned for plausible specs.
    drawn = OUTCOMES["built"] + OUTCOMES["refused"]
    if drawn == 0:
        pytest.skip("the property test ran in another process")
    assert OUTCOMES["built"] >= 0.8 * drawn, OUTCOMES
