"""Every spec builds a module that the static pass describes exactly, and that trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import archspec


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
    with torch.no_grad():
        shapes["head"] = tuple(model(x).shape[1:])
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


def _quick(spec_file: Path) -> archspec.Spec:
    """The spec, with ImageNet-sized images cut to 64×64 and volumes to 32³: quick, and every
    layer still runs."""
    spec = archspec.load_spec(spec_file)
    sizes = {"image": ("height", "width"), "volume": ("depth", "height", "width")}.get(spec.input.type, ())
    # 64×64 leaves the last block 2×2: a batch norm over a batch of two 1×1 maps would give
    # ±1 whatever its input, and no gradient.
    side = 64 if spec.input.type == "image" else 32
    if sizes and getattr(spec.input, sizes[-1]) > side:
        return archspec.load_spec(spec_file, [f"input.{axis}={side}" for axis in sizes])
    return spec


def test_forward_is_finite_and_every_parameter_learns(spec_file: Path) -> None:
    spec = _quick(spec_file)
    model = archspec.build(spec).train()
    # A batch norm over two values gives ±1 whatever its input, and no gradient: feature
    # vectors, and a 32³ volume's last 1×1×1 block, take a batch of four; images keep two
    # (their 2×2 maps give a norm eight values).
    batch = 2 if len(archspec.static_pass(spec).input_shape) == 3 else 4
    out = model(_example(spec, batch))
    assert out.shape == (batch, *archspec.static_pass(spec).out_shape)
    assert torch.isfinite(out).all(), "forward output has NaN or inf"
    out.square().mean().backward()
    # A dense layer's projection bias only feeds batch norms (later layers' and the head's), and
    # a batch norm in training mode subtracts the batch mean: its true gradient is zero. Every
    # other parameter must get a real one.
    batch_norm_only = all(not isinstance(m, (nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm))
                          for m in model.modules())
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
        if name in biases_before_norms:
            noisy += [name] if size > 1e-4 * largest else []
        elif not size > 1e-7 * largest:
            silent.append(name)
    assert silent == [], f"parameters without gradient: {silent[:5]}"
    assert noisy == [], f"biases before batch norms with a gradient: {noisy[:5]}"


def test_forward_head_is_pool_and_linear_on_the_features(spec_file: Path) -> None:
    spec = _quick(spec_file)
    model = archspec.build(spec).eval()
    x = _example(spec, 1)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape[1] == model.num_features
        # Written out independently for the reference heads: ReLU, global average pool, Linear.
        if spec.head.activation in ("relu", "inherit") and spec.head.pool == "avg":
            pooled = torch.relu(features).flatten(2).mean(2) if features.dim() > 2 else torch.relu(features)
            linear = getattr(model, model.output_name)
            expected = pooled @ linear.weight.T + linear.bias
            got = model(x)
            assert (got - expected).abs().max() <= 1e-5 * expected.abs().max().clamp_min(1e-12)


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
