"""Benchmark 7: training memory against depth, naive vs memory-efficient (shared storage).

DenseNet-121, -169, -201 and -264 (blocks from Huang et al. 2017, table 1) at batch 8,
224×224, one SGD step each, measured by ``archspec.measure_step`` in a fresh process
(glibc's mmap threshold fixed, so resident memory follows the live tensors). The
activation peak is the measured peak less the parameters and their gradients; its fitted
exponent is the least-squares slope of log(activation peak) against log(dense layers).

That peak hides the law: the four models share the stem and blocks 1 and 2 (6 and 12
layers at 56² and 28²) and deepen only blocks 3 and 4 (14², 7²). The memory-efficient
peak is reached in block 1's backward, so it is flat with depth; the naive one grows on
a large shared constant, so its exponent is below 1.

So the law itself is measured per block: the bytes autograd saves for backward inside
each dense block during one training-mode forward (``saved_tensors_hooks``, each storage
once, parameters and buffers left out), fitted against the block's layers L. A naive
layer l saves its concatenated input and its normalised copy (c + g·l channels each, c
the block's input width, g = 32) and two bottleneck maps (4g each): 2·(L·c + g·L(L−1)/2)
+ 8g·L values per position, quadratic in L. The memory-efficient block saves only its
output buffer, c + g·L values, linear. The closed-form exponent is the same fit applied
to those counts. The terms in c are what keep the exponents below 2 and 1: the slope of
log(c + g·L) is g·L / (c + g·L), which reaches 1 only once g·L ≫ c, and the naive slope
reaches 2 only once g·L/2 ≫ c + 4g. Block 3 enters with c = 256 at every depth (L = 24 to
64); block 4's c grows with block 3 (512 to 1152), which its closed form includes.
"""

from __future__ import annotations

import torch

import archspec
from common import SPECS, fitted_exponent, main

FULL = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32), 264: (6, 12, 64, 48)}
SMOKE = {"a": (1, 1, 1, 1), "b": (2, 2, 2, 2)}
BATCH, SMOKE_BATCH = 8, 2
BYTES = 4  # float32
MODES = {"naive": False, "memory_efficient": True}


def _overrides(config: tuple[int, ...], side: int) -> tuple[str, ...]:
    return (*(f"body[{2 * i}].num_layers={n}" for i, n in enumerate(config)),
            f"input.height={side}", f"input.width={side}")


def saved_by_block(model: torch.nn.Module, images: torch.Tensor) -> dict[int, int]:
    """Bytes of the distinct storages autograd saves for backward inside each dense block
    (``features.denseblockN`` → N) during one training-mode forward; parameters and buffers,
    which exist anyway, left out, and a storage saved twice counted once, by its first saver."""
    state = {tensor.untyped_storage().data_ptr() for tensor in model.state_dict().values()}
    seen: set[int] = set()
    saved: dict[int, int] = {}
    current: list[int | None] = [None]
    handles = []
    for name, module in model.named_modules():
        if name.startswith("features.denseblock") and name.count(".") == 1:
            number = int(name.removeprefix("features.denseblock"))
            handles.append(module.register_forward_pre_hook(lambda *_, n=number: current.__setitem__(0, n)))
            handles.append(module.register_forward_hook(lambda *_: current.__setitem__(0, None)))
            saved[number] = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in state and pointer not in seen:
            seen.add(pointer)  # the graph keeps it alive, so the address is not reused
            if current[0] is not None:
                saved[current[0]] += storage.nbytes()
        return tensor

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model.train()(images)  # the output, and the graph with it, is dropped here
    finally:
        for handle in handles:
            handle.remove()
    return saved


def closed_form(mode: str, *, layers: int, width: int, growth: int, bottleneck: int) -> int:
    """Values per batch element and position a block saves, as the module docstring counts."""
    if mode == "naive":
        return 2 * (layers * width + growth * layers * (layers - 1) // 2) + 2 * bottleneck * layers
    return width + growth * layers


def per_block(configs: dict, *, batch: int, side: int) -> list[str]:
    """Saved bytes of blocks 3 and 4 in each mode, and their exponents against the layers."""
    torch.manual_seed(0)
    images = torch.randn(batch, 3, side, side)
    blocks = (3, 4)
    layers: dict[int, list[int]] = {block: [] for block in blocks}
    widths: dict[int, list[int]] = {block: [] for block in blocks}
    measured = {(mode, block): [] for mode in MODES for block in blocks}
    predicted = {(mode, block): [] for mode in MODES for block in blocks}
    for config in configs.values():
        for mode, efficient in MODES.items():
            model = archspec.build(SPECS / "densenet121.yaml",
                                   overrides=(*_overrides(config, side), f"defaults.memory_efficient={efficient}"))
            saved = saved_by_block(model, images)
            for block in blocks:
                first = model.get_submodule(f"features.denseblock{block}.denselayer1")
                shape = dict(layers=config[block - 1], width=first.norm1.num_features,
                             growth=first.conv2.out_channels, bottleneck=first.conv1.out_channels)
                measured[mode, block].append(saved[block])
                predicted[mode, block].append(closed_form(mode, **shape))
                if mode == "naive":
                    layers[block].append(shape["layers"])
                    widths[block].append(shape["width"])
            del model, saved
    lines = [f"saved for backward inside a dense block (one forward, batch {batch}, {side}×{side}; "
             "L layers, c input channels; MiB)",
             f"  {'model':>6} | " + " | ".join(f"{f'L{b}':>3} {f'c{b}':>5} {'naive':>7} {'shared':>7}" for b in blocks)]
    for index, name in enumerate(configs):
        cells = [f"{layers[b][index]:>3} {widths[b][index]:>5} {measured['naive', b][index] / 2**20:>7.1f} "
                 f"{measured['memory_efficient', b][index] / 2**20:>7.1f}" for b in blocks]
        lines.append(f"  {name:>6} | " + " | ".join(cells))
    # Closed-form values times batch, positions and 4 bytes, against the measured bytes:
    # what is left is BatchNorm's per-channel statistics.
    spatial = {block: (side // 2 ** (block + 1)) ** 2 for block in blocks}  # stem /4, transitions /2
    for mode, label in (("naive", "naive"), ("memory_efficient", "memory-efficient")):
        ratios = [measured[mode, b][i] / (predicted[mode, b][i] * batch * spatial[b] * BYTES)
                  for b in blocks for i in range(len(configs))]
        lines.append(f"measured / closed-form bytes, {label}: {min(ratios):.4f} to {max(ratios):.4f}")
    for block in blocks:
        fits = [f"{label} {fitted_exponent(layers[block], measured[mode, block]):.2f} "
                f"(closed form {fitted_exponent(layers[block], predicted[mode, block]):.2f})"
                for mode, label in (("naive", "naive"), ("memory_efficient", "memory-efficient"))]
        lines.append(f"block {block} saved activations vs its layers: " + ", ".join(fits))
    return lines


def run(*, smoke: bool) -> list[str]:
    configs = SMOKE if smoke else FULL
    batch = SMOKE_BATCH if smoke else BATCH
    side = 64 if smoke else 224
    lines = [f"training memory against depth (batch {batch}, {side}×{side}; MiB of activations at the peak)",
             f"  {'model':>6} {'layers':>7} {'naive':>10} {'shared':>10} {'ratio':>7}"]
    layers, peaks = [], {"naive": [], "memory_efficient": []}
    for name, config in configs.items():
        spec = archspec.load_spec(SPECS / "densenet121.yaml", _overrides(config, side))
        weights = 2 * archspec.static_pass(spec).params * BYTES  # parameters and gradients
        for mode in peaks:
            measured = archspec.measure_step(spec, mode=mode, batch_size=batch)
            peaks[mode].append(measured.peak - weights)
        layers.append(sum(config))
        naive, shared = peaks["naive"][-1], peaks["memory_efficient"][-1]
        lines.append(f"  {name:>6} {layers[-1]:>7} {naive / 2**20:>10.0f} {shared / 2**20:>10.0f} "
                     f"{shared / naive:>7.2f}")
    lines.append("fitted exponent of activation memory vs dense layers: "
                 f"naive {fitted_exponent(layers, peaks['naive']):.2f}, "
                 f"memory-efficient {fitted_exponent(layers, peaks['memory_efficient']):.2f}")
    return lines + per_block(configs, batch=batch, side=side)


if __name__ == "__main__":
    main(run, __doc__)
