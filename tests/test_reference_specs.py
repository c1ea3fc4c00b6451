"""The reference specs give exactly the published networks: counts, shapes, weights, outputs."""

from __future__ import annotations

import pytest
import torch
import torchvision

import archspec
from tests.conftest import ROOT
from tests.nontrivial import randomize_state, relative_error

# Parameter counts: torchvision.models.densenetXXX() (num_classes=1000); the tutorial
# DenseNet of the D2L chapter (seeds 000/003); seed 001's MLP DenseNet.
PARAMETERS = {
    "tutorial": 758_226,
    "densenet121": 7_978_856,
    "densenet161": 28_681_000,
    "densenet169": 14_149_480,
    "densenet201": 20_013_928,
    "mlp_tabular": 2_880_449,
}

# Stage output shapes printed by seed 000 for a 1×96×96 input.
TUTORIAL_SHAPES = [
    (64, 24, 24),
    (192, 24, 24),
    (96, 12, 12),
    (224, 12, 12),
    (112, 6, 6),
    (240, 6, 6),
    (120, 3, 3),
    (248, 3, 3),
    (10,),
]

# Seed 001: 1024 → 1280 → 640 → 896 → 448 → 704 → 352 → 608 features, then 1 value.
MLP_SHAPES = [(1024,), (1280,), (640,), (896,), (448,), (704,), (352,), (608,), (1,)]

TORCHVISION = ["densenet121", "densenet161", "densenet169", "densenet201"]


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_parameter_count_is_exact(name: str) -> None:
    spec = archspec.load_spec(ROOT / "specs" / f"{name}.yaml")
    model = archspec.build(spec)
    built = sum(p.numel() for p in model.parameters())
    assert archspec.static_pass(spec).params == PARAMETERS[name], "static pass count"
    assert built == PARAMETERS[name], "built module count"


@pytest.mark.parametrize(
    ("name", "shapes"), [("tutorial", TUTORIAL_SHAPES), ("mlp_tabular", MLP_SHAPES)]
)
def test_stage_shapes_match_the_seed(name: str, shapes: list[tuple[int, ...]]) -> None:
    result = archspec.static_pass(archspec.load_spec(ROOT / "specs" / f"{name}.yaml"))
    assert [stage.out_shape for stage in result.stages] == shapes


def test_mlp_maps_330_features_to_one_value() -> None:
    model = archspec.build(ROOT / "specs" / "mlp_tabular.yaml").eval()
    with torch.no_grad():
        out = model(torch.randn(5, 330))
    assert out.shape == (5, 1)
    assert model.num_features == 608


# 64×64 keeps the big networks quick (every layer still runs; the last block sees 2×2);
# DenseNet-121 is also checked at its declared 224×224.
EQUALITY_CASES = [(name, 64) for name in TORCHVISION] + [("densenet121", 224)]


@pytest.mark.parametrize(("name", "side"), EQUALITY_CASES)
def test_torchvision_weights_load_strictly_and_give_the_same_outputs(name: str, side: int) -> None:
    torch.manual_seed(0)
    reference = randomize_state(getattr(torchvision.models, name)()).eval()
    model = archspec.build(ROOT / "specs" / f"{name}.yaml").eval()
    assert list(model.state_dict()) == list(reference.state_dict()), "same keys, same order"
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        error = relative_error(model(x), reference(x))
    assert error <= 1e-6, f"max error {error:.3g} of the largest output"


def test_override_changes_the_head() -> None:
    # 7,978,856 − 1024·1000 − 1000 + 1024·10 + 10 = 6,964,106 (issue 4's example).
    spec = archspec.load_spec(ROOT / "specs" / "densenet121.yaml", ["head.num_classes=10"])
    assert archspec.static_pass(spec).params == 6_964_106
