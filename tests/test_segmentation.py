"""Segmentation networks: FC-DenseNet against the recipe written out here in plain PyTorch, the
DenseNet U-Net against segmentation-models-pytorch, both on non-trivial state, in 2D and 3D."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import archspec
from tests.nontrivial import randomize_state, relative_error

SPECS = Path(__file__).resolve().parent.parent / "specs" / "segmentation"

# Counted layer by layer from the paper's recipe, convolutions with biases (the authors' code),
# 11 CamVid classes; the paper's 3.5M and 9.4M for 67 and 103 also count BatchNorm statistics.
FC_DENSENETS = {
    "fc_densenet56": (12, [4] * 5, 4, [4] * 5, 1_376_795, None),  # the paper gives 1.5M
    "fc_densenet67": (16, [5] * 5, 5, [5] * 5, 3_463_243, 3_502_923),
    "fc_densenet103": (16, [4, 5, 7, 10, 12], 15, [12, 10, 7, 5, 4], 9_322_091, 9_425_163),
}


class _Layer(nn.Sequential):
    def __init__(self, width: int, growth: int, dims: int):
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[dims]
        norm = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]
        super().__init__(norm(width), nn.ReLU(), conv(width, growth, 3, padding=1, bias=True), nn.Dropout(0.2))


class _Block(nn.Module):
    """The recipe's dense block: every layer reads all earlier maps; ``new_only`` for the up path."""

    def __init__(self, width: int, growth: int, layers: int, dims: int, new_only: bool):
        super().__init__()
        self.layers = nn.ModuleList(_Layer(width + i * growth, growth, dims) for i in range(layers))
        self.new_only = new_only

    def forward(self, x: Tensor) -> Tensor:
        maps = [x]
        for layer in self.layers:
            maps.append(layer(torch.cat(maps, 1)))
        return torch.cat(maps[1:] if self.new_only else maps, 1)


class FCDenseNet(nn.Module):
    """FC-DenseNet as Jégou et al. describe it, its tensors created in the network's order."""

    def __init__(self, growth: int, down: list[int], bottleneck: int, up: list[int], classes: int,
                 channels: int = 3, dims: int = 2):
        super().__init__()
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[dims]
        norm = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]
        pool = {2: nn.MaxPool2d, 3: nn.MaxPool3d}[dims]
        transposed = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[dims]
        self.first = conv(channels, 48, 3, padding=1, bias=True)
        self.down = nn.ModuleList()
        width, skip_widths = 48, []
        for layers in down:
            self.down.append(_Block(width, growth, layers, dims, new_only=False))
            width += growth * layers
            skip_widths.append(width)
            self.down.append(nn.Sequential(norm(width), nn.ReLU(), conv(width, width, 1, bias=True),
                                           nn.Dropout(0.2), pool(2)))
        self.bottleneck = _Block(width, growth, bottleneck, dims, new_only=True)
        new = growth * bottleneck
        self.up = nn.ModuleList()
        for index, layers in enumerate(up):
            self.up.append(transposed(new, new, 3, stride=2, padding=0, bias=True))
            width = new + skip_widths[-1 - index]
            last = index == len(up) - 1
            self.up.append(_Block(width, growth, layers, dims, new_only=not last))
            new = width + growth * layers if last else growth * layers
        self.last = conv(new, classes, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.first(x)
        skips = []
        for block, transition_down in zip(self.down[::2], self.down[1::2]):
            x = block(x)
            skips.append(x)
            x = transition_down(x)
        x = self.bottleneck(x)
        for transition_up, block in zip(self.up[::2], self.up[1::2]):
            x = transition_up(x)
            skip = skips.pop()
            starts = [(have - want) // 2 for have, want in zip(x.shape[2:], skip.shape[2:])]
            x = x[(..., *(slice(a, a + n) for a, n in zip(starts, skip.shape[2:])))]  # centre crop
            x = block(torch.cat([x, skip], 1))
        return self.last(x)


def _load_in_order(model: nn.Module, reference: nn.Module) -> None:
    """Copy ``reference``'s tensors into ``model`` in creation order; every shape must agree."""
    ours, theirs = model.state_dict(), reference.state_dict()
    assert len(ours) == len(theirs), f"{len(ours)} tensors vs the recipe's {len(theirs)}"
    for (key, value), (their_key, their_value) in zip(ours.items(), theirs.items()):
        assert value.shape == their_value.shape, f"{key} {tuple(value.shape)} vs {their_key} {tuple(their_value.shape)}"
    model.load_state_dict(dict(zip(ours, theirs.values())), strict=True)


@pytest.mark.parametrize("name", FC_DENSENETS)
def test_fc_densenet_counts_from_the_paper(name: str) -> None:
    growth, down, bottleneck, up, trainable, with_statistics = FC_DENSENETS[name]
    result = archspec.static_pass(archspec.load_spec(SPECS / f"{name}.yaml"))
    assert result.params == trainable
    reference = FCDenseNet(growth, down, bottleneck, up, classes=11)
    assert sum(p.numel() for p in reference.parameters()) == trainable
    statistics = sum(b.numel() for n, b in reference.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert with_statistics is None or trainable + statistics == with_statistics
    assert result.out_shape == (11, 224, 224)


@pytest.mark.parametrize(
    ("name", "size"),
    [("fc_densenet56", (2, 3, 64, 96)), ("fc_densenet103", (1, 3, 48, 40)), ("fc_densenet_3d", (1, 1, 32, 32, 48))],
)
def test_fc_densenet_equals_the_recipe(name: str, size: tuple[int, ...]) -> None:
    spec_path = SPECS / f"{name}.yaml"
    axes = ("depth", "height", "width")[-(len(size) - 2):]
    spec = archspec.load_spec(spec_path, [f"input.{axis}={n}" for axis, n in zip(axes, size[2:])])
    head = spec.head.num_classes
    growth = spec.defaults.growth_rate
    body = [part for part in spec.body if part.type == "dense_block"]
    blocks = [part.num_layers for part in body]
    downs = len([part for part in spec.body if part.type == "transition"])
    torch.manual_seed(0)
    reference = randomize_state(FCDenseNet(growth, blocks[:downs], blocks[downs], blocks[downs + 1:], head,
                                           channels=size[1], dims=len(size) - 2)).eval()
    model = archspec.build(spec)
    _load_in_order(model, reference)
    x = torch.randn(size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        actual, expected = model.eval()(x), reference(x)
    assert actual.shape == (size[0], head, *size[2:])
    assert torch.equal(actual, expected), f"relative error {relative_error(actual, expected):.2e}"


def test_unet_densenet121_loads_segmentation_models_pytorch_strictly_and_matches(tmp_path) -> None:
    smp = pytest.importorskip("segmentation_models_pytorch")
    torch.manual_seed(0)
    reference = randomize_state(smp.Unet("densenet121", encoder_weights=None, classes=11)).eval()
    assert sum(p.numel() for p in reference.parameters()) == 13_609_083  # smp 0.6's own count
    torch.save(reference.state_dict(), tmp_path / "smp.pt")  # its own key names
    spec = archspec.load_spec(SPECS / "unet_densenet121.yaml", ["input.height=64", "input.width=96"])
    assert archspec.static_pass(spec).params == 13_609_083
    model = archspec.load_weights(archspec.build(spec), tmp_path / "smp.pt").eval()
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        actual, expected = model(x), reference(x)
    assert torch.equal(actual, expected), f"relative error {relative_error(actual, expected):.2e}"


@pytest.mark.parametrize(
    ("fit", "size", "message"),
    [
        # A 3×3 transposed convolution with stride 2 doubles 16 to 33.
        ("none", 32, "the input is 33×33 and the skip body[0] 32×32; set fit: crop or fit: pad"),
        ("pad", 32, "the input is 33×33 and the skip body[0] 32×32; the input is larger: use fit: crop"),
    ],
)
def test_a_skip_of_another_size_needs_a_fit(fit: str, size: int, message: str) -> None:
    overrides = [f"input.height={size}", f"input.width={size}", f"body[24].fit={fit}"]
    with pytest.raises(archspec.SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        archspec.static_pass(archspec.load_spec(SPECS / "fc_densenet56.yaml", overrides))


def test_crop_and_pad_centre_the_input() -> None:
    from archspec.blocks import fitted

    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    assert fitted(x, (3, 3), "crop").flatten().tolist() == [6, 7, 8, 11, 12, 13, 16, 17, 18]
    padded = fitted(torch.ones(1, 1, 2, 3), (5, 4), "pad")[0, 0]
    assert padded.tolist() == [[0, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


@pytest.mark.parametrize("name", ["fc_densenet56", "unet_densenet121"])
def test_segmentation_exports_verified_at_two_sizes(name: str, tmp_path) -> None:
    overrides = ["input.height=64", "input.width=64"]
    if name == "unet_densenet121":
        overrides += [f"body[{i}].num_layers=2" for i in (0, 2, 4, 6)]
    report = archspec.export_onnx(SPECS / f"{name}.yaml", tmp_path / "net.onnx", overrides=tuple(overrides))
    cases = report.verification.cases
    assert [case.output_shape for case in cases] == [(1, 11, 64, 64), (4, 11, 64, 64), (4, 11, 48, 40)]
    assert all(case.passed for case in cases)
    assert report.random_state is not None and report.random_state.passed


@pytest.mark.parametrize("name", ["fc_densenet56", "unet_densenet121"])
def test_segmentation_of_signals_exports_verified(name: str, tmp_path) -> None:
    # The same parts in 1D: transposed or nearest upsampling, crops and skips along one axis.
    spec = archspec.load_spec(SPECS / f"{name}.yaml", ["input={type: signal, channels: 2, length: 100}",
                                                       *(f"body[{i}].num_layers=2" for i in (0, 2, 4, 6))])
    result = archspec.static_pass(spec)
    assert result.out_shape == (11, 100)
    report = archspec.export_onnx(spec, tmp_path / "signal.onnx")
    cases = report.verification.cases
    assert [case.output_shape[:2] for case in cases] == [(1, 11), (4, 11), (4, 11)]
    assert [case.output_shape[2] for case in cases] == [case.input_shape[2] for case in cases]  # logits per position
    assert len({case.input_shape[2] for case in cases}) == 2, "a second length is verified too"
    assert report.verification.passed and report.random_state is not None and report.random_state.passed


def test_scores_that_do_not_come_back_to_the_input_size_are_refused_with_sizes_that_do() -> None:
    # The U-Net's last block doubles the stem's 38 positions (a stride-2 convolution of 75) to 76.
    with pytest.raises(archspec.SpecError, match=r"input: the segmentation head's scores are 76×100 for a 75×100 "
                                                 r"input: .* do not come back to its size; use 74×100 or 76×100$"):
        archspec.static_pass(archspec.load_spec(SPECS / "unet_densenet121.yaml", ["input.height=75", "input.width=100"]))
