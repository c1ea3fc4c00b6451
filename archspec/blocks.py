"""Torch modules of a DenseNet: norms and activations, dense layer and block, transition,
stems, blur pooling. Signals, images and volumes (``dims`` 1, 2, 3) and feature vectors
(``dims`` 0) share every module.

Module names follow torchvision's ``models/densenet.py`` (``norm1``, ``conv1``,
``denselayer1``…) because pretrained weights are keyed by them. Factories take
plain keyword arguments and never see spec objects.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from math import comb

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BATCH_NORM = {0: nn.BatchNorm1d, 1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_INSTANCE_NORM = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
_MAX_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_AVG_POOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}


@dataclass(frozen=True)
class NormAct:
    """Which norm and activation stand before a projection, as plain values."""

    norm: str
    """``batch_norm``, ``group_norm``, ``instance_norm``, ``layer_norm`` or ``none``."""
    activation: str
    """``relu``, ``relu6``, ``leaky_relu``, ``elu``, ``gelu``, ``silu`` or ``none``."""
    groups: int = 0
    """Channel groups of a group norm."""
    negative_slope: float = 0.0
    """Slope of a leaky ReLU."""


def norm_layer(width: int, kind: NormAct, *, dims: int) -> nn.Module | None:
    """The norm over ``width`` channels (``dims`` spatial axes; 0 for feature vectors), or ``None``."""
    if kind.norm == "batch_norm":
        return _BATCH_NORM[dims](width)
    if kind.norm == "group_norm":
        return nn.GroupNorm(kind.groups, width)
    if kind.norm == "instance_norm":
        return _INSTANCE_NORM[dims](width, affine=True)
    if kind.norm == "layer_norm":
        return nn.LayerNorm(width)
    return None


def activation_layer(kind: NormAct, *, in_place: bool = True) -> nn.Module | None:
    """The activation, in place where autograd allows it (ReLU-like ones), or ``None``."""
    factories = {
        "relu": lambda: nn.ReLU(inplace=in_place),
        "relu6": lambda: nn.ReLU6(inplace=in_place),
        "leaky_relu": lambda: nn.LeakyReLU(kind.negative_slope, inplace=in_place),
        "elu": lambda: nn.ELU(inplace=in_place),
        "gelu": nn.GELU,
        "silu": nn.SiLU,
    }
    factory = factories.get(kind.activation)
    return None if factory is None else factory()


def _activation_name(kind: NormAct) -> str:
    """torchvision's ``relu`` for ReLU (its module names), ``act`` for the others."""
    return "relu" if kind.activation == "relu" else "act"


def add_norm_act(layers: OrderedDict[str, nn.Module], width: int, kind: NormAct, *, dims: int, suffix: str) -> None:
    """Add ``norm{suffix}`` and ``relu{suffix}`` (or ``act{suffix}``) to ``layers``, where they exist."""
    norm = norm_layer(width, kind, dims=dims)
    if norm is not None:
        layers[f"norm{suffix}"] = norm
    # In place only on the norm's own output: without a norm the input may be a tensor another
    # part saved for backward (a shared-storage block's output).
    activation = activation_layer(kind, in_place=norm is not None)
    if activation is not None:
        layers[f"{_activation_name(kind)}{suffix}"] = activation


def projection(in_width: int, out_width: int, *, dims: int, kernel: int, bias: bool, stride: int = 1,
               padding: int | None = None) -> nn.Module:
    """A Linear map (``dims`` 0) or a convolution, padded to keep the size by default."""
    if dims == 0:
        return nn.Linear(in_width, out_width, bias=bias)
    padding = kernel // 2 if padding is None else padding
    return _CONV[dims](in_width, out_width, kernel, stride=stride, padding=padding, bias=bias)


class BlurPool(nn.Module):
    """Anti-aliased downsampling as timm's ``BlurPool2d``, in 1, 2 or 3 dimensions: reflect-pad
    by one, then a depthwise [1, 2, 1]/4 binomial filter (its outer product) with ``stride``."""

    taps = 3

    def __init__(self, *, channels: int, stride: int, dims: int):
        super().__init__()
        self.stride = stride
        self.dims = dims
        binomial = torch.tensor([comb(self.taps - 1, k) for k in range(self.taps)], dtype=torch.float32)
        binomial /= binomial.sum()
        kernel = binomial
        for _ in range(dims - 1):
            kernel = kernel[..., None] * binomial  # outer product, one axis at a time
        # Not saved in the state dict: it is fixed, and timm's checkpoints do not hold it.
        self.register_buffer("filt", kernel.expand(channels, 1, *kernel.shape).contiguous(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, [self.taps // 2] * (2 * self.dims), mode="reflect")
        conv = (F.conv1d, F.conv2d, F.conv3d)[self.dims - 1]
        return conv(x, self.filt, stride=self.stride, groups=x.shape[1])


def pool_layer(kind: str, *, channels: int, dims: int, kernel: int, stride: int, padding: int = 0) -> nn.Module:
    """A ``max``, ``avg`` or ``blur`` pool; ``blur`` is a stride-1 max pool, then the blur with ``stride``."""
    if kind == "max":
        return _MAX_POOL[dims](kernel, stride=stride, padding=padding)
    if kind == "avg":
        return _AVG_POOL[dims](kernel, stride=stride, padding=padding)
    return nn.Sequential(_MAX_POOL[dims](kernel, stride=1, padding=padding),
                         BlurPool(channels=channels, stride=stride, dims=dims))


class _KeepRunningStats:
    """Snapshot the layer's BatchNorm buffers on entry and restore them on exit.

    Recomputing a layer in the backward pass runs its BatchNorms in training mode
    a second time; without this their running mean, variance and batch count
    would be updated twice per step.
    """

    def __init__(self, layer: nn.Module):
        norms = [m for m in layer.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.buffers = [buffer for norm in norms for buffer in norm.buffers()]

    def __enter__(self) -> None:
        self.saved = [b.clone() for b in self.buffers]

    def __exit__(self, *exc: object) -> None:
        with torch.no_grad():
            for buffer, saved in zip(self.buffers, self.saved):
                buffer.copy_(saved)


def checkpointed(stretch: nn.Module, x: Tensor) -> Tensor:
    """``stretch(x)`` keeping only ``x`` for backward, which reruns ``stretch`` first: torch's
    non-reentrant checkpoint, with BatchNorm statistics kept from being updated twice."""
    return checkpoint(stretch, x, use_reentrant=False,
                      context_fn=lambda: (contextlib.nullcontext(), _KeepRunningStats(stretch)))


class DenseLayer(nn.Sequential):
    """Pre-activation layer reading the concatenation of every earlier feature map.

    With a bottleneck (``bn_size``) it is norm-act-conv1×1-norm-act-conv(k), as in
    DenseNet-BC; without, norm-act-conv(k) as in the tutorial. ``dims=0`` swaps in
    Linear maps and 1d norms for tabular input.
    """

    def __init__(
        self,
        *,
        in_width: int,
        growth_rate: int,
        bn_size: int | None,
        drop_rate: float,
        memory_efficient: bool,
        bias: bool,
        dims: int,
        kernel_size: int,
        norm_act: NormAct,
    ):
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        op = "conv" if dims else "linear"
        if bn_size is None:
            stages = (("", in_width, growth_rate, kernel_size),)
        else:
            bottleneck = bn_size * growth_rate
            stages = (("1", in_width, bottleneck, 1), ("2", bottleneck, growth_rate, kernel_size))
        for suffix, fan_in, fan_out, kernel in stages:
            add_norm_act(layers, fan_in, norm_act, dims=dims, suffix=suffix)
            layers[f"{op}{suffix}"] = projection(fan_in, fan_out, dims=dims, kernel=kernel, bias=bias)
        super().__init__(layers)
        self.growth_rate = growth_rate
        self.drop_rate = drop_rate
        self.memory_efficient = memory_efficient

    def new_features(self, x: Tensor) -> Tensor:
        """The ``growth_rate`` new channels from the concatenated input ``x``."""
        for module in self:
            x = module(x)
        if self.drop_rate > 0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x

    def forward(self, features: list[Tensor]) -> Tensor:
        return self.new_features(torch.cat(features, 1))

    def recomputed_gradients(self, x: Tensor, grad_new: Tensor) -> tuple[Tensor | None, ...]:
        """Gradients of input ``x`` and of every parameter, given the new features' ``grad_new``,
        recomputing the layer from ``x`` in training mode.

        The last convolution's forward is not rerun: its output already sits in the block's
        buffer, and its backward needs only its input (``_ConvolutionBackward``). Dropout after
        it is redrawn on a zero stand-in of the convolution's output, from the generator state
        the caller replays: on the CPU torch's dropout multiplies by a noise tensor drawn from
        the shape alone, so the mask, and the backward's ``grad * noise``, are the forward's.
        On other devices (a fused kernel whose draws may follow the input's layout), or for a
        Linear (feature vectors), the whole layer is rerun.
        """
        projection = self[-1]
        replay_dropout = self.drop_rate == 0 or x.device.type == "cpu"
        with torch.enable_grad():
            if not (replay_dropout and isinstance(projection, nn.modules.conv._ConvNd)):
                new = self.new_features(x)
            else:
                before = x
                for module in list(self)[:-1]:
                    before = module(before)
                # No name keeps the projection's input alive: it is freed as soon as the
                # backward pass is through the activation before it.
                new = _ConvolutionBackward.apply(before, projection.weight, projection.bias, projection, grad_new.shape,
                                                 self.drop_rate > 0)
                if self.drop_rate > 0:
                    new = F.dropout(new, p=self.drop_rate, training=True)
        return torch.autograd.grad(new, [x, *self.parameters()], grad_new, allow_unused=True)


class _ConvolutionBackward(torch.autograd.Function):
    """A convolution whose forward is skipped (it returns a stand-in of the output's shape) and
    whose backward is the aten kernel autograd runs for ``conv(input)``, so gradients are
    bit-identical to the convolution's own. The stand-in is a broadcast zero, or, with
    ``dense`` (dropout is redrawn on it), a contiguous one laid out as the convolution's output."""

    @staticmethod
    def forward(ctx, input: Tensor, weight: Tensor, bias: Tensor | None, conv: nn.Module, shape: torch.Size,
                dense: bool = False) -> Tensor:
        ctx.conv, ctx.has_bias = conv, bias is not None
        ctx.save_for_backward(input, weight)
        return input.new_zeros(shape) if dense else input.new_zeros(()).expand(shape)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        input, weight = ctx.saved_tensors
        conv = ctx.conv
        grad_input, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad, input, weight, [weight.shape[0]] if ctx.has_bias else None, conv.stride, conv.padding,
            conv.dilation, False, [0] * len(conv.stride), conv.groups, [True, True, ctx.has_bias],
        )
        return grad_input, grad_weight, grad_bias, None, None, None


class _SharedStorage(torch.autograd.Function):
    """A memory-efficient dense block (Pleiss et al., 2017): every feature map lives once.

    Forward writes the block's input and each layer's new channels into one buffer, the
    block's output, and keeps nothing else: not the feature list, not a layer's
    intermediate maps. The part after the block saves that same output, so the block's
    features are held once. Backward walks the layers in reverse, recomputes each from its
    prefix of the buffer up to its last convolution's input (``recomputed_gradients``;
    BatchNorm statistics restored, dropout masks replayed), and adds
    its input gradient into the prefix of one gradient buffer, in the order autograd adds
    them in the naive block, so gradients are bit-identical.
    """

    @staticmethod
    def forward(ctx, block: DenseBlock, x: Tensor, *params: Tensor) -> Tensor:
        layers = list(block.values())
        out = x.new_empty((x.shape[0], block.out_width, *x.shape[2:]))  # (N, C_out, *spatial)
        out[:, : x.shape[1]] = x
        width = x.shape[1]
        states = []
        for layer in layers:
            states.append(_rng_state(x) if layer.drop_rate > 0 else None)
            new = layer.new_features(out[:, :width].contiguous())  # the layout torch.cat gives
            out[:, width : width + new.shape[1]] = new
            width += new.shape[1]
        ctx.block, ctx.states, ctx.in_width = block, states, x.shape[1]
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        (out,) = ctx.saved_tensors
        # Inside a DenseNet the part after a block (a norm, convolution, pool or Linear) hands
        # it a gradient nobody else holds, so it is accumulated in place: the block then needs
        # one output-sized gradient, not two. A block used on its own copies it first.
        exclusive = ctx.block.gradient_is_exclusive and grad_out.is_contiguous()
        grad = grad_out if exclusive else grad_out.clone(memory_format=torch.contiguous_format)
        param_grads: list[Tensor | None] = []
        width = out.shape[1]
        for layer, state in zip(reversed(list(ctx.block.values())), reversed(ctx.states)):
            growth = layer.growth_rate
            width -= growth
            x = out[:, :width].contiguous().requires_grad_(True)
            # Statistics are restored only after the gradient: BatchNorm's backward checks
            # that the running buffers it was given are unchanged.
            with _KeepRunningStats(layer), _replayed_rng(state, x):
                found = layer.recomputed_gradients(x, grad[:, width : width + growth])
            grad[:, :width] += found[0]
            param_grads[:0] = found[1:]
            del x, found  # free this layer's recomputation before the next one starts
        # A copy, so that the block-wide gradient buffer is freed when this returns.
        return (None, grad[:, : ctx.in_width].clone(), *param_grads)


def _rng_state(x: Tensor) -> tuple[Tensor, Tensor | None]:
    """The CPU generator's state, and the device's where ``x`` lives on CUDA."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(x.device) if x.is_cuda else None


@contextlib.contextmanager
def _replayed_rng(state: tuple[Tensor, Tensor | None] | None, x: Tensor):
    """Run with the generators as they were before a layer's forward (dropout masks match)."""
    if state is None:
        yield
        return
    with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], x.device)
        yield


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers; keeps the feature list inside and concatenates once.

    With ``memory_efficient`` (training with gradients only) the layers write into one
    shared buffer instead (``_SharedStorage``); eval and export take the plain path.
    ``gradient_is_exclusive``: what follows the block hands it a gradient tensor that nothing
    else holds, so backward may accumulate into it in place. ``keep_input`` false: the output
    is the layers' new features only (FC-DenseNet's bottleneck and up path).
    """

    def __init__(self, *, num_layers: int, in_width: int, growth_rate: int, memory_efficient: bool,
                 gradient_is_exclusive: bool = False, keep_input: bool = True, **layer: object):
        super().__init__()
        for index in range(num_layers):
            self.add_module(
                f"denselayer{index + 1}",
                DenseLayer(in_width=in_width + index * growth_rate, growth_rate=growth_rate,
                           memory_efficient=memory_efficient, **layer),
            )
        self.out_width = in_width + num_layers * growth_rate
        self.memory_efficient = memory_efficient
        self.gradient_is_exclusive = gradient_is_exclusive
        self.keep_input = keep_input

    def forward(self, x: Tensor) -> Tensor:
        if self.memory_efficient and self.training and torch.is_grad_enabled():
            out = _SharedStorage.apply(self, x, *self.parameters())
            return out if self.keep_input else out[:, x.shape[1]:]  # a view: the buffer holds each map once
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features if self.keep_input else features[1:], 1)


def transition(
    *,
    in_width: int,
    out_width: int,
    dims: int,
    norm_act: NormAct,
    bias: bool,
    post_activation: NormAct,
    drop_rate: float,
    pool: str,
    pool_size: int,
) -> nn.Sequential:
    """Norm-act-projection (1×1 conv or linear), optional activation and dropout, optional pooling."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    add_norm_act(layers, in_width, norm_act, dims=dims, suffix="")
    layers["conv" if dims else "linear"] = projection(in_width, out_width, dims=dims, kernel=1, bias=bias)
    after = activation_layer(post_activation)
    if after is not None:
        layers[f"{_activation_name(post_activation)}_out"] = after
    if drop_rate > 0:
        layers["drop"] = nn.Dropout(drop_rate)
    if pool in ("avg", "max"):
        layers["pool"] = pool_layer(pool, channels=out_width, dims=dims, kernel=pool_size, stride=pool_size)
    elif pool == "blur":
        layers["pool"] = BlurPool(channels=out_width, stride=pool_size, dims=dims)
    return nn.Sequential(layers)


def conv_stem(
    *,
    widths: list[int],
    dims: int,
    kernel_size: int,
    stride: int,
    padding: int,
    bias: bool,
    norm_act: NormAct,
    pool: str,
    pool_kernel_size: int,
    pool_stride: int,
    pool_padding: int,
) -> OrderedDict[str, nn.Module]:
    """``conv0``/``norm0``/``relu0`` (torchvision), then ``conv1``/``norm1``… for a deep stem (timm),
    then ``pool0``: ``widths[0]`` input channels through ``widths[1:]``, the first conv strided."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for index, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
        layers[f"conv{index}"] = projection(fan_in, fan_out, dims=dims, kernel=kernel_size, bias=bias,
                                          stride=stride if index == 0 else 1, padding=padding)
        add_norm_act(layers, fan_out, norm_act, dims=dims, suffix=str(index))
    if pool != "none":
        layers["pool0"] = pool_layer(pool, channels=widths[-1], dims=dims, kernel=pool_kernel_size,
                                     stride=pool_stride, padding=pool_padding)
    return layers


def mlp_stem(*, widths: list[int], activation: NormAct, bias: bool, drop_rate: float) -> OrderedDict[str, nn.Module]:
    """``linear0``, ``relu0``, ``linear1``… mapping ``widths[0]`` features to ``widths[-1]``."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for index, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
        layers[f"linear{index}"] = nn.Linear(fan_in, fan_out, bias=bias)
        module = activation_layer(activation)
        if module is not None:
            layers[f"{_activation_name(activation)}{index}"] = module
        if drop_rate > 0:
            layers[f"drop{index}"] = nn.Dropout(drop_rate)
    return layers


# ---- dense prediction: upsampling, skips, the U-Net decoder block ----------------------------

_CONV_TRANSPOSE = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_LINEAR_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}


def upsampling(*, mode: str, in_width: int, out_width: int, dims: int, scale: int, kernel_size: int, padding: int,
               bias: bool) -> nn.Module:
    """A transposed convolution (stride ``scale``), or nearest or linear interpolation by ``scale``."""
    if mode == "transposed":
        return _CONV_TRANSPOSE[dims](in_width, out_width, kernel_size, stride=scale, padding=padding, bias=bias)
    return nn.Upsample(scale_factor=scale, mode=_LINEAR_MODE[dims] if mode == "linear" else "nearest")


def fitted(x: Tensor, sizes: torch.Size | tuple[int, ...], fit: str) -> Tensor:
    """``x`` with its spatial sizes made ``sizes``: its centre cropped, or zero-padded evenly
    (the odd row or column last); ``none``: as it is (the static pass found the sizes equal).
    No branch on the sizes themselves, so ``torch.export`` keeps them symbolic."""
    if fit == "none":
        return x
    if fit == "crop":
        for axis, (have, want) in enumerate(zip(x.shape[2:], sizes), start=2):
            x = x.narrow(axis, (have - want) // 2, want)
        return x
    pads: list[int] = []
    for have, want in reversed(list(zip(x.shape[2:], sizes))):  # F.pad lists the last axis first
        pads += [(want - have) // 2, want - have - (want - have) // 2]
    return F.pad(x, pads)


class Concat(nn.Module):
    """``cat([x, skip])`` along channels, ``x`` first fitted to the skip's size (``crop``/``pad``)."""

    def __init__(self, *, fit: str):
        super().__init__()
        self.fit = fit

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return torch.cat([fitted(x, skip.shape[2:], self.fit), skip], 1)


class UNetBlock(nn.Module):
    """segmentation-models-pytorch's decoder block: interpolate to the skip's size (or by
    ``scale``), concatenate the skip, then ``conv1`` and ``conv2`` (convolution, norm, activation)."""

    def __init__(self, *, in_width: int, skip_width: int, out_width: int, dims: int, kernel_size: int, mode: str,
                 scale: int, norm_act: NormAct):
        super().__init__()
        self.mode = _LINEAR_MODE[dims] if mode == "linear" else "nearest"
        self.scale = scale
        widths = (in_width + skip_width, out_width)
        for index, fan_in in enumerate(widths, start=1):
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            layers["0"] = projection(fan_in, out_width, dims=dims, kernel=kernel_size, bias=norm_act.norm == "none")
            norm = norm_layer(out_width, norm_act, dims=dims)
            if norm is not None:
                layers["1"] = norm
            activation = activation_layer(norm_act)
            if activation is not None:
                layers["2"] = activation
            self.add_module(f"conv{index}", nn.Sequential(layers))

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if skip is None:
            x = F.interpolate(x, scale_factor=self.scale, mode=self.mode)
        else:
            x = torch.cat([F.interpolate(x, size=skip.shape[2:], mode=self.mode), skip], 1)
        return self.conv2(self.conv1(x))
