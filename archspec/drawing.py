"""A picture of a spec, drawn from the static pass: parts as boxes, channels through depth.

The top panel has one box per part (stem, each dense block as ``num_layers × growth_rate``
with its dense connectivity sketched inside, transitions, head), each labelled with its
output shape and parameters. The bottom panel plots the channel count after every layer:
it climbs by ``growth_rate`` through a block and drops at each transition, DenseNet's
sawtooth. Uses matplotlib's Agg and SVG backends only (no pyplot, no system binaries,
no torch).
"""

from __future__ import annotations

from pathlib import Path

from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.ticker import MaxNLocator

from archspec.atomic import atomic_output, check_destination
from archspec.errors import Problem, SpecError
from archspec.format.schema import Spec
from archspec.format.shapes import StaticPass, Stage, static_pass

FORMATS = {".svg": "svg", ".png": "png"}
_BOX_INCHES = 1.75  # width per part: keeps DenseNet-201's nine boxes legible
_SKETCH_NODES = 5  # dense layers drawn inside a block's box; more are elided


def _dims(shape: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in shape)


def _sketch(axes, left: float, right: float, num_layers: int) -> None:
    """Dense connectivity: each drawn layer gets an arc from every earlier one."""
    count = min(num_layers, _SKETCH_NODES)
    step = (right - left) / (count + 1)
    xs = [left + step * (index + 1) for index in range(count)]
    for i, start in enumerate(xs):
        for end in xs[i + 1:]:
            axes.add_patch(FancyArrowPatch(
                (start, 0.5), (end, 0.5), connectionstyle="arc3,rad=-0.55",
                arrowstyle="-|>", mutation_scale=6, linewidth=0.6, color="#8a5a2b",
            ))
    axes.scatter(xs, [0.5] * count, s=28, color="#8a5a2b", zorder=3)
    if num_layers > count:
        axes.text(right - step * 0.35, 0.5, "…", ha="center", va="center", fontsize=9)


def _parts_panel(axes, stages: tuple[Stage, ...]) -> None:
    axes.set_xlim(0, len(stages))
    axes.set_ylim(0, 1)
    axes.axis("off")
    for index, stage in enumerate(stages):
        box = stage.part.box(stage)
        left, right = index + 0.08, index + 0.92
        axes.add_patch(FancyBboxPatch(
            (left, 0.04), right - left, 0.92, boxstyle="round,pad=0,rounding_size=0.06",
            facecolor=box.colour, edgecolor="#555555", linewidth=0.8,
        ))
        centre = index + 0.5
        axes.text(centre, 0.88, box.title, ha="center", va="center", fontsize=9, weight="bold")
        axes.text(centre, 0.77, box.detail, ha="center", va="center", fontsize=8.5)
        if box.sketch_layers:
            _sketch(axes, left, right, box.sketch_layers)
        axes.text(centre, 0.2, _dims(stage.out_shape), ha="center", va="center", fontsize=8.5)
        axes.text(centre, 0.1, f"{stage.params:,} params", ha="center", va="center", fontsize=8)
        if index:
            axes.add_patch(FancyArrowPatch(
                (index - 0.08, 0.5), (index + 0.08, 0.5), arrowstyle="-|>", mutation_scale=8,
                linewidth=0.8, color="#555555",
            ))


def _channel_panel(axes, result: StaticPass) -> None:
    """Channels after the stem and after every dense layer and transition; blocks shaded."""
    depth: list[int] = []
    widths: list[int] = []
    blocks = 0
    for stage in result.stages:
        steps = stage.part.depth_widths(stage)
        start = depth[-1] if depth else 0
        depth += [start + index + (1 if depth else 0) for index in range(len(steps))]
        widths += steps
        box = stage.part.box(stage)
        if box.sketch_layers:
            blocks += 1
            axes.axvspan(start, depth[-1], color=box.colour, alpha=0.6, linewidth=0)
            axes.text((start + depth[-1]) / 2, 0.97, f"block {blocks}", transform=axes.get_xaxis_transform(),
                      ha="center", va="top", fontsize=8, color="#8a5a2b")
    axes.plot(depth, widths, color="#8a5a2b", linewidth=1.4, marker="o", markersize=2.5)
    unit = "channels" if len(result.input_shape) > 1 else "features"
    axes.set_xlabel("depth (stem, then one step per dense layer or transition)", fontsize=9)
    axes.set_ylabel(unit, fontsize=9)
    axes.set_title(f"{unit} through depth", fontsize=10)
    axes.set_xlim(0, depth[-1])
    axes.set_ylim(0, max(widths) * 1.15)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.tick_params(labelsize=8)


def render(spec: Spec, result: StaticPass | None = None) -> Figure:
    """The diagram of ``spec`` as a matplotlib ``Figure`` (not attached to pyplot)."""
    result = result or static_pass(spec)
    width = max(8.0, _BOX_INCHES * len(result.stages))
    figure = Figure(figsize=(width, 6.2), layout="constrained")
    parts, channels = figure.subplots(2, 1, height_ratios=(1.25, 1))
    figure.suptitle(f"{spec.name}: {result.params:,} parameters, input {_dims(result.input_shape)}",
                    fontsize=11)
    _parts_panel(parts, result.stages)
    _channel_panel(channels, result)
    return figure


def write_diagram(spec: Spec, path: str | Path) -> Path:
    """Draw ``spec`` to ``path`` (``.svg`` or ``.png``), atomically: all or nothing.

    Raises:
        SpecError: the extension is neither, or the file cannot be written there.
    """
    target = Path(path)
    kind = FORMATS.get(target.suffix.lower())
    if kind is None:
        raise SpecError(Problem(f"must end in .svg or .png, got {str(target)!r}", option="--output"))
    check_destination(target)
    figure = render(spec)
    # Text stays text in SVG, so the labels can be searched and read by tests.
    settings = {"svg.fonttype": "none", "svg.hashsalt": spec.name}
    with atomic_output(target) as temporary, rc_context(settings):
        figure.savefig(temporary, format=kind, dpi=150, metadata=_metadata(kind))
    return target


def _metadata(kind: str) -> dict[str, None]:
    """No creation date in the file, so the same spec always draws the same bytes."""
    return {"Date": None} if kind == "svg" else {}
