"""Backbones: timm's ``features_only`` surface and the named outputs a spec takes at points of
the network, compared map by map with timm and MONAI on non-trivial state."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import archspec
from tests.nontrivial import randomize_state, relative_error

SPECS = Path(__file__).resolve().parent.parent / "specs"

# timm's feature_info for every DenseNet-BC ImageNet variant: the stem before its pool, dense
# blocks 1-3, and the final norm with its activation.
TIMM_REDUCTIONS = [2, 4, 8, 16, 32]


@pytest.mark.parametrize(
    ("name", "channels"),
    [
        ("densenet121", [64, 256, 512, 1024, 1024]),  # timm 1.0 feature_info.channels()
        ("densenet169", [64, 256, 512, 1280, 1664]),
        ("densenet201", [64, 256, 512, 1792, 1920]),
    ],
)
def test_features_only_equals_timm_map_by_map(name: str, channels: list[int], tmp_path) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    reference = randomize_state(timm.create_model(name, pretrained=False)).eval()
    expected_net = timm.create_model(name, pretrained=False, features_only=True).eval()
    # timm's features-only net flattens `features.X` into `features_X`; same tensors otherwise.
    expected_net.load_state_dict(
        {key.replace("features.", "features_", 1): value for key, value in reference.state_dict().items()
         if not key.startswith("classifier")}
    )
    assert expected_net.feature_info.channels() == channels
    torch.save(reference.state_dict(), tmp_path / "timm.pt")
    spec = archspec.load_spec(SPECS / f"{name}.yaml", ["input.height=64", "input.width=96"])
    backbone = archspec.build(spec, features_only=True)
    archspec.load_weights(backbone, tmp_path / "timm.pt", skip_head=True)
    backbone.eval()
    assert backbone.feature_info.channels() == channels
    assert backbone.feature_info.reduction() == TIMM_REDUCTIONS
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        maps, expected = backbone(x), expected_net(x)
    assert len(maps) == len(expected) == 5
    for index, (actual, wanted) in enumerate(zip(maps, expected)):
        assert torch.equal(actual, wanted), f"{name} map {index}: relative error {relative_error(actual, wanted):.2e}"


def test_out_indices_pick_maps_as_timm_does() -> None:
    spec = archspec.load_spec(SPECS / "densenet121.yaml", ["input.height=64", "input.width=64"])
    backbone = archspec.build(spec, features_only=True, out_indices=(1, -1))
    assert backbone.feature_info.channels() == [256, 1024]
    assert backbone.feature_info.module_name() == ["features.denseblock1", "head_activation"]
    assert [tuple(m.shape) for m in backbone.eval()(torch.zeros(1, 3, 64, 64))] == [(1, 256, 16, 16), (1, 1024, 2, 2)]
    with pytest.raises(archspec.SpecError, match=r"out_indices \[5\] outside the 5 feature maps"):
        archspec.build(spec, features_only=True, out_indices=(0, 5))


def test_features_only_refuses_tabular_input() -> None:
    with pytest.raises(archspec.SpecError, match="features_only needs feature maps"):
        archspec.build(SPECS / "mlp_tabular.yaml", features_only=True)


def test_monai_3d_maps_equal_the_maps_of_its_own_modules(tmp_path) -> None:
    monai_nets = pytest.importorskip("monai.networks.nets")
    torch.manual_seed(0)
    reference = randomize_state(monai_nets.DenseNet121(spatial_dims=3, in_channels=1, out_channels=2)).eval()
    torch.save(reference.state_dict(), tmp_path / "monai.pt")
    spec = archspec.load_spec(SPECS / "monai" / "densenet121_3d.yaml",
                              ["input.depth=32", "input.height=32", "input.width=32"])
    backbone = archspec.build(spec, features_only=True)
    archspec.load_weights(backbone, tmp_path / "monai.pt", skip_head=True)
    x = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    expected = []
    with torch.no_grad():
        y = x
        for name, module in reference.features.named_children():
            y = module(y)
            if name in ("relu0", "denseblock1", "denseblock2", "denseblock3"):
                expected.append(y.clone())
        expected.append(reference.class_layers.relu(y))
        maps = backbone.eval()(x)
    assert backbone.feature_info.reduction() == TIMM_REDUCTIONS
    assert [m.shape[1] for m in maps] == [64, 256, 512, 1024, 1024]
    for index, (actual, wanted) in enumerate(zip(maps, expected)):
        assert torch.equal(actual, wanted), f"map {index}: relative error {relative_error(actual, wanted):.2e}"


def _tutorial(*overrides: str) -> nn.Module:
    """The tutorial with a non-idempotent activation and random state everywhere."""
    spec = archspec.load_spec(SPECS / "tutorial.yaml", ["defaults.activation=gelu", "input.height=32",
                                                         "input.width=32", *overrides])
    torch.manual_seed(0)
    return randomize_state(archspec.build(spec), seed=3).eval()


def test_timm_surface_on_a_classifier() -> None:
    model = _tutorial()
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = model.forward_features(x)
        # timm's meaning: the head's norm and activation belong to forward_features.
        expected_features = nn.functional.gelu(model.features(x))
        pooled = model.forward_head(features, pre_logits=True)
        logits = model(x)
    assert torch.equal(features, expected_features)
    assert pooled.shape == (2, model.num_features)
    assert torch.equal(pooled, features.mean(dim=(2, 3)))
    classifier = model.get_classifier()
    assert torch.allclose(logits, pooled @ classifier.weight.T + classifier.bias, rtol=0, atol=1e-6)
    assert float(classifier.bias.detach().abs().min()) > 0  # random biases: dropping one would show
    model.reset_classifier(3)
    assert model.get_classifier().out_features == 3 and model(x).shape == (2, 3)
    model.reset_classifier(0)
    with torch.no_grad():
        assert torch.equal(model(x), pooled)


def test_forward_intermediates_ends_in_forward_features() -> None:
    model = _tutorial()
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        only = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert torch.equal(final, model.forward_features(x))
    assert torch.equal(maps[-1], final)
    assert [m.shape[1] for m in maps] == [c["num_chs"] for c in model.feature_info]
    assert [m.data_ptr() for m in only] == [m.data_ptr() for m in only] and len(only) == 2
    assert all(torch.equal(a, b) for a, b in zip(only, maps[-2:]))


def test_named_outputs_at_points_of_a_spec() -> None:
    outputs = ("outputs=[{name: stem, at: stem.activation}, {name: skip1, at: 'body[1].activation'},"
               " {name: block2, at: 'body[2]'}, {name: logits, at: head}]")
    model = _tutorial(outputs)
    result = archspec.static_pass(archspec.load_spec(SPECS / "tutorial.yaml", ["input.height=32", "input.width=32",
                                                                                 outputs]))
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(x)
        stem = model.features[:3](x)  # conv0, norm0, act0: before the stem's pool
        block1 = model.features[:5](x)
        skip = model.features.transition1[:2](block1)  # the transition's norm and activation
        block2 = model.features[:7](x)
        plain = type(model).forward_head(model, model.forward_features(x))
    assert list(got) == ["stem", "skip1", "block2", "logits"]
    assert [tuple(t.shape[1:]) for t in got.values()] == [o.shape for o in result.outputs]
    for name, expected in (("stem", stem), ("skip1", skip), ("block2", block2), ("logits", plain)):
        assert torch.equal(got[name], expected), name


@pytest.mark.parametrize(
    ("at", "message"),
    [
        ("body[99]", "body[99] is not a part"),
        ("body[0].activation", "a dense_block has no point 'activation'"),
        ("head.pool", "a classifier has no point 'pool' (points: head, head.norm, head.activation)"),
    ],
)
def test_an_output_at_a_point_that_does_not_exist_is_refused(at: str, message: str) -> None:
    with pytest.raises(archspec.SpecError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        archspec.load_spec(SPECS / "tutorial.yaml", [f"outputs=[{{name: x, at: '{at}'}}]"])


def test_backbone_spec_gives_timm_and_segmentation_models_pytorch_maps(tmp_path) -> None:
    timm = pytest.importorskip("timm")
    smp = pytest.importorskip("segmentation_models_pytorch")
    torch.manual_seed(0)
    reference = randomize_state(timm.create_model("densenet121", pretrained=False)).eval()
    torch.save(reference.state_dict(), tmp_path / "timm.pt")
    timm_maps = timm.create_model("densenet121", pretrained=False, features_only=True).eval()
    timm_maps.load_state_dict({key.replace("features.", "features_", 1): value
                               for key, value in reference.state_dict().items() if not key.startswith("classifier")})
    encoder = smp.Unet("densenet121", encoder_weights=None, classes=2).encoder.eval()
    encoder.load_state_dict({key: value for key, value in reference.state_dict().items()
                             if not key.startswith("classifier")})
    spec = archspec.load_spec(SPECS / "backbones" / "densenet121_features.yaml", ["input.height=64", "input.width=64"])
    model = archspec.load_weights(archspec.build(spec), tmp_path / "timm.pt", skip_head=True).eval()
    assert model.skipped_keys == ("classifier.weight", "classifier.bias")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        maps = model(x)
        expected = dict(zip(["c1", "c2", "c3", "c4", "c5"], timm_maps(x)))
        # smp's encoder returns the input, relu0, then the three transitions' activations, then norm5.
        expected.update(zip(["skip2", "skip3", "skip4"], encoder(x)[2:5]))
    assert list(maps) == ["c1", "c2", "c3", "c4", "c5", "skip2", "skip3", "skip4"]
    for name, wanted in expected.items():
        assert torch.equal(maps[name], wanted), f"{name}: relative error {relative_error(maps[name], wanted):.2e}"


def test_fine_tuning_export_loads_all_but_the_output_layer(tmp_path) -> None:
    source = randomize_state(archspec.build(SPECS / "tutorial.yaml"), seed=5)
    torch.save(source.state_dict(), tmp_path / "ten.pt")
    overrides = ("head.num_classes=3",)
    with pytest.raises(archspec.SpecError, match="skip the file's"):
        archspec.export_onnx(SPECS / "tutorial.yaml", tmp_path / "three.onnx", overrides=overrides,
                             weights=tmp_path / "ten.pt")
    report = archspec.export_onnx(SPECS / "tutorial.yaml", tmp_path / "three.onnx", overrides=overrides,
                                  weights=tmp_path / "ten.pt", skip_head=True)
    assert report.verification.passed and report.output_names == ("logits",)
    target = archspec.load_weights(archspec.build(SPECS / "tutorial.yaml", overrides=overrides), tmp_path / "ten.pt",
                                   skip_head=True).eval()
    x = torch.randn(2, 1, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # the features are the source's, the output layer is new
        assert torch.equal(target.forward_features(x), source.eval().forward_features(x))
        assert target(x).shape == (2, 3)
