"""Every spec builds a module that the static pass describes exactly, and that trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archspec
from archspec.format.parts.vocabulary import activation_name, negative_slope
from tests.conftest import ROOT
from tests.nontrivial import randomize_state, relative_error


def stage_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Output shape (per sample) of the last module of every stage, from one forward pass."""
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for path, names in model.stage_modules.items():
        if path == "head":
            continue

        def record(_module, _inputs, output, path=path):
            shapes[path] = tuple(output.shape[1:])

        hooks.append(modules[names[-1]].register_forward_hook(record))
    with torch.no_grad():  # the head's output, also where a spec names other outputs
        shapes["head"] = tuple(model.forward_head(model.forward_features(x)).shape[1:])
    for hook in hooks:
        hook.remove()
    return shapes


def _example(spec: archspec.Spec, batch: int) -> torch.Tensor:
    return torch.randn(batch, *archspec.static_pass(spec).input_shape)


def test_static_pass_equals_the_module(spec_file: Path) -> None:
    spec = _quick(spec_file)
    result = archspec.static_pass(spec)
    model = archspec.build(spec).eval()
    modules = dict(model.named_modules())

    assert list(model.stage_modules) == [stage.path for stage in result.stages]
    shapes = stage_outputs(model, _example(spec, 1))
    for stage in result.stages:
        params = sum(
            p.numel() for name in model.stage_modules[stage.path] for p in modules[name].parameters()
        )
        assert params == stage.params, f"{stage.path}: module {params} vs static {stage.params}"
        assert shapes[stage.path] == stage.out_shape, f"{stage.path}: output shape"
    assert sum(p.numel() for p in model.parameters()) == result.params
    assert model.num_features == result.num_features


LARGE = 10_000_000  # parameters past which the training tests give each dense block two layers


def _quick(spec_file: Path, *, few_layers: bool = False) -> archspec.Spec:
    """The spec, with ImageNet-sized images cut to 64×64 and volumes to 32³: quick, and every
    layer still runs. ``few_layers``: a network over ``LARGE`` parameters keeps two layers a
    block (its widths, growth rate and stem as written), for the tests that train it."""
    spec = archspec.load_spec(spec_file)
    sizes = {"image": ("height", "width"), "volume": ("depth", "height", "width")}.get(spec.input.type, ())
    # 64×64 leaves the last block 2×2: a batch norm over a batch of two 1×1 maps would give
    # ±1 whatever its input, and no gradient.
    side = 64 if spec.input.type == "image" else 32
    overrides = [f"input.{axis}={side}" for axis in sizes] if sizes and getattr(spec.input, sizes[-1]) > side else []
    if few_layers and archspec.static_pass(spec).params > LARGE:
        overrides += [f"body[{index}].num_layers=2" for index, part in enumerate(spec.body) if part.type == "dense_block"]
    return archspec.load_spec(spec_file, overrides) if overrides else spec


def test_forward_is_finite_and_every_parameter_learns(spec_file: Path) -> None:
    spec = _quick(spec_file, few_layers=True)
    model = archspec.build(spec).train()
    # A batch norm over two values gives ±1 whatever its input, and no gradient: feature
    # vectors, and a 32³ volume's last 1×1×1 block, take a batch of four; images keep two
    # (their 2×2 maps give a norm eight values).
    result = archspec.static_pass(spec)
    batch = 2 if len(result.input_shape) == 3 else 4
    out = model(_example(spec, batch))
    outputs = list(out.values()) if result.named else [out]
    assert [tuple(value.shape) for value in outputs] == [(batch, *output.shape) for output in result.outputs]
    assert all(torch.isfinite(value).all() for value in outputs), "forward output has NaN or inf"
    sum(value.square().mean() for value in outputs).backward()
    # In a classifier's chain a dense layer's projection bias only feeds batch norms (later
    # layers' and the head's), and a batch norm in training mode subtracts the batch mean: its
    # true gradient is zero. Every other parameter must get a real one. Where maps also reach
    # skips, named outputs or a transposed convolution, which biases reach a norm alone depends
    # on the wiring (FC-DenseNet's transitions up feed norms, but the last one the head): there
    # the features' biases are not judged, and tests/test_segmentation.py proves them exact.
    chain = not result.named and not any(stage.reads for stage in result.stages) and result.head.part.pools
    unjudged = set() if chain else {
        f"{name}.bias" for name, module in model.named_modules()
        if name.startswith("features.") and isinstance(module, (nn.modules.conv._ConvNd, nn.Linear))}
    batch_norm_only = chain and all(
        not isinstance(m, (nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)) for m in model.modules())
    # So does a transition's, when nothing but pooling stands between it and the next norms.
    linear_after = {name.rsplit(".", 1)[0] for name, m in model.named_modules()
                    if name.startswith("features.transition") and name.endswith("_out")}
    biases_before_norms = {
        f"{name}.bias" for name, module in model.named_modules()
        if name.startswith(("features.denseblock", "features.transition"))
        and name.rsplit(".", 1)[0] not in linear_after
        and isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) and module.bias is not None and batch_norm_only
    }
    largest = max(float(p.grad.abs().max()) for p in model.parameters() if p.grad is not None)
    silent, noisy = [], []
    for name, parameter in model.named_parameters():
        size = 0.0 if parameter.grad is None else float(parameter.grad.abs().max())
        if name in unjudged:
            continue
        if name in biases_before_norms:
            noisy += [name] if size > 1e-4 * largest else []
        elif not size > 1e-7 * largest:
            silent.append(name)
    assert silent == [], f"parameters without gradient: {silent[:5]}"
    assert noisy == [], f"biases before batch norms with a gradient: {noisy[:5]}"


_BY_HAND = {
    "relu": torch.relu,
    "relu6": lambda x: x.clamp(0.0, 6.0),
    "elu": lambda x: torch.where(x > 0, x, torch.expm1(x)),
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / 2**0.5)),
    "silu": lambda x: x * torch.sigmoid(x),
    "none": lambda x: x,
}


def _activation_by_hand(head: object, x: torch.Tensor) -> torch.Tensor:
    """The head's activation written out from its definition."""
    name = activation_name(head.activation)
    if name == "leaky_relu":
        return torch.where(x > 0, x, x * negative_slope(head.activation))
    return _BY_HAND[name](x)


def _head_by_hand(model: nn.Module, head: object, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """What follows forward_features, written out: global pooling, dropout ``mask``, Linear."""
    if features.dim() > 2:
        spatial = features.flatten(2)
        pooled = {"avg": spatial.mean(2), "max": spatial.amax(2),
                  "avg_max": 0.5 * (spatial.mean(2) + spatial.amax(2))}[head.pool]
    else:
        pooled = features
    if mask is not None:
        pooled = pooled * mask
    linear = getattr(model, model.output_name)
    return pooled @ linear.weight.T + linear.bias


def _stages_by_hand(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Every stage's modules in ``stage_modules`` order, up to the output layer (the head's norm included)."""
    modules = dict(model.named_modules())
    for names in model.stage_modules.values():
        for name in names:
            if name != model.output_name:
                x = modules[name](x)
    return x


def _assert_forward_matches_its_parts(spec: archspec.Spec, seed: int) -> torch.Tensor:
    """forward_features is the stages and the head's activation (timm's meaning); forward_head is
    pooling and the Linear; both written out by hand, on random norms and biases. Returns the
    stages' output before the activation."""
    model = randomize_state(archspec.build(spec), seed=seed).eval()
    head = archspec.static_pass(spec).stages[-1].part
    x = torch.randn(2, *archspec.static_pass(spec).input_shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        stages = _stages_by_hand(model, x)
        features = model.forward_features(x)
        assert features.shape[1] == model.num_features
        assert relative_error(features, _activation_by_hand(head, stages)) <= 1e-5, "forward_features"
        expected = _head_by_hand(model, head, features)
        assert relative_error(model.forward_head(features), expected) <= 1e-5, "forward_head"
        assert relative_error(model(x), expected) <= 1e-5, "forward"
    assert float(getattr(model, model.output_name).bias.detach().abs().min()) > 0, "a zero output bias hides its loss"
    return stages


def test_forward_features_and_head_by_hand_on_every_spec(spec_file: Path) -> None:
    spec = _quick(spec_file, few_layers=True)
    if not archspec.static_pass(spec).head.part.pools:
        pytest.skip("a per-position or features head: tests/test_segmentation.py and test_backbone.py compare "
                    "those networks with their references")
    _assert_forward_matches_its_parts(spec, seed=0)


# Non-idempotent activations (ReLU twice is ReLU once and hides one applied twice) and every pool.
_SMALL_TUTORIAL = ("input.height=32", "input.width=32", "defaults.growth_rate=8")


@pytest.mark.parametrize(("activation", "pool"), [("gelu", "avg"), ("elu", "max"), ("silu", "avg_max")])
def test_forward_head_applies_its_activation_once(activation: str, pool: str) -> None:
    spec = archspec.load_spec(ROOT / "specs" / "tutorial.yaml",
                              [*_SMALL_TUTORIAL, f"head.activation={activation}", f"head.pool={pool}"])
    stages = _assert_forward_matches_its_parts(spec, seed=1)
    once = _BY_HAND[activation](stages)
    assert relative_error(_BY_HAND[activation](once), once) > 1e-2, "applied twice would look like once"


def test_head_dropout_trains_and_is_off_in_eval() -> None:
    rate = 0.5
    spec = archspec.load_spec(ROOT / "specs" / "tutorial.yaml", [*_SMALL_TUTORIAL, f"head.drop_rate={rate}"])
    model = randomize_state(archspec.build(spec), seed=2).train()
    head = archspec.static_pass(spec).stages[-1].part
    x = torch.randn(4, *archspec.static_pass(spec).input_shape, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([0, 3, 5, 9])
    linear = getattr(model, model.output_name)

    # One training step's loss and output-layer gradient, against the head by hand with the same
    # mask: nothing but dropout draws random numbers in this network.
    torch.manual_seed(7)
    out = model(x)
    F.cross_entropy(out, target).backward()
    trained = linear.weight.grad.clone()
    torch.manual_seed(7)
    features = _activation_by_hand(head, _stages_by_hand(model, x)).detach()  # batch statistics, as in the step
    pooled_width = (x.shape[0], model.num_features)
    mask = F.dropout(torch.ones(pooled_width), p=rate, training=True)
    assert 0 < int((mask == 0).sum()) < mask.numel()
    linear.weight.grad = None
    expected = _head_by_hand(model, head, features, mask)
    F.cross_entropy(expected, target).backward()
    assert relative_error(out.detach(), expected.detach()) <= 1e-5, "the training output is not dropped out"
    assert relative_error(trained, linear.weight.grad) <= 1e-5, "the step's gradient is not dropped out"
    undropped = _head_by_hand(model, head, features)
    assert relative_error(out.detach(), undropped.detach()) > 1e-2, "dropout changed nothing"

    # In eval, no dropout: the same output whatever the random state, and the undropped head.
    model.eval()
    with torch.no_grad():
        features = _activation_by_hand(head, _stages_by_hand(model, x))
        torch.manual_seed(1)
        first = model(x)
        torch.manual_seed(2)
        assert torch.equal(first, model(x)), "eval output depends on the random state"
        assert relative_error(first, _head_by_hand(model, head, features)) <= 1e-5, "dropout in eval"


def test_convolutions_are_kaiming_initialised() -> None:
    # torchvision's init: kaiming_normal_ (fan_in, gain √2), so each weight's standard
    # deviation is close to √(2 / fan_in).
    model = archspec.build(Path(__file__).parent.parent / "specs" / "densenet121.yaml")
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.weight.numel() >= 4096:
            fan_in = module.weight[0].numel()
            expected = (2 / fan_in) ** 0.5
            measured = float(module.weight.std())
            assert abs(measured - expected) <= 0.1 * expected, f"{name}: std {measured:.4g} vs {expected:.4g}"


def test_initialisation_follows_torchvision() -> None:
    model = archspec.build(Path(__file__).parent.parent / "specs" / "tutorial.yaml")
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight)), name
            assert torch.equal(module.bias, torch.zeros_like(module.bias)), name
        elif isinstance(module, nn.Linear):
            assert torch.equal(module.bias, torch.zeros_like(module.bias)), name


def test_defaults_fill_only_what_a_block_leaves_out() -> None:
    base = {
        "archspec": 1,
        "name": "mixed",
        "input": {"type": "image", "channels": 3, "height": 32, "width": 32},
        "stem": {"type": "conv_stem", "out_channels": 16, "pool": "none"},
        "defaults": {"growth_rate": 8, "bn_size": 2, "memory_efficient": True},
        "body": [
            {"type": "dense_block", "num_layers": 2},
            {"type": "transition", "out_channels": 10},
            {"type": "dense_block", "num_layers": 3, "growth_rate": 4, "bn_size": None,
             "memory_efficient": False},
        ],
        "head": {"type": "classifier", "num_classes": 3},
    }
    spec = archspec.load_spec(base)
    first, second = (stage.part for stage in archspec.static_pass(spec).stages if stage.kind == "dense_block")
    assert (first.growth_rate, first.bn_size, first.memory_efficient) == (8, 2, True)
    assert (second.growth_rate, second.bn_size, second.memory_efficient) == (4, None, False)
    model = archspec.build(spec)
    layers = {n: m for n, m in model.named_modules() if n.endswith("denselayer1")}
    assert [m.memory_efficient for m in layers.values()] == [True, False]
    # 16 + 2·8 = 32 channels, explicit 10 after the transition, 10 + 3·4 = 22 at the end.
    assert [s.out_shape[0] for s in archspec.static_pass(spec).stages] == [16, 32, 10, 22, 3]


@pytest.mark.parametrize("tag", ["conv_stem", "dense_block", "transition"])
def test_registry_refuses_a_second_factory(tag: str) -> None:
    from archspec.builder import register

    with pytest.raises(ValueError, match="already registered"):
        register(tag)(lambda part, assembly: None)
