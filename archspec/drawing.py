"""A picture of a spec, drawn from the static pass: parts as boxes, channels through depth.

The top panel has one box per part (stem, each dense block as ``num_layers × growth_rate``
with its dense connectivity sketched inside, transitions, head), each labelled with its
output shape and parameters. A network whose parts read earlier maps (a segmentation
network's skips) is drawn as a U: each box one row lower per halving of the input's size, so
the down path descends and the up path climbs back, and each skip is a bracket from the part
it is taken at (labelled with that point) to the part that reads it. A spec's named
``outputs`` are marked where they are taken, with their names. The bottom panel plots the
channel count after every layer:
it climbs by ``growth_rate`` through a block and drops at each transition, DenseNet's
sawtooth. Uses matplotlib's Agg and SVG backends only (no pyplot, no system binaries,
no torch).
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.path import Path as MplPath
from matplotlib.ticker import MaxNLocator

from archspec.atomic import atomic_output, check_destination
from archspec.errors import Problem, SpecError
from archspec.format.schema import Spec
from archspec.format.shapes import StaticPass, Stage, static_pass

FORMATS = {".svg": "svg", ".png": "png"}
_BOX_INCHES = 1.75  # width per part: keeps DenseNet-201's nine boxes legible
_SKETCH_NODES = 5  # dense layers drawn inside a block's box; more are elided
_ROW_PITCH = 1.35  # a U's rows: boxes one unit high, the gap between them holds skips and taps
_SKIP_COLOUR = "#2b6f8a"
_TAP_COLOUR = "#b8322a"


def _dims(shape: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in shape)


def _sketch(axes, left: float, right: float, num_layers: int, middle: float = 0.5) -> None:
    """Dense connectivity: each drawn layer gets an arc from every earlier one."""
    count = min(num_layers, _SKETCH_NODES)
    step = (right - left) / (count + 1)
    xs = [left + step * (index + 1) for index in range(count)]
    for i, start in enumerate(xs):
        for end in xs[i + 1:]:
            axes.add_patch(FancyArrowPatch(
                (start, middle), (end, middle), connectionstyle="arc3,rad=-0.55",
                arrowstyle="-|>", mutation_scale=6, linewidth=0.6, color="#8a5a2b",
            ))
    axes.scatter(xs, [middle] * count, s=28, color="#8a5a2b", zorder=3)
    if num_layers > count:
        axes.text(right - step * 0.35, middle, "…", ha="center", va="center", fontsize=9)


def _level(stage: Stage, input_shape: tuple[int, ...]) -> int:
    """How many times the input's first spatial size halved by this part's output (0 for vectors)."""
    if len(stage.out_shape) < 2:
        return 0
    return max(0, round(math.log2(input_shape[1] / stage.out_shape[1])))


def _bases(result: StaticPass) -> list[float]:
    """Where each box's bottom is: one row for a chain, one row per level for a network with skips."""
    if not any(stage.reads for stage in result.stages):
        return [0.0] * len(result.stages)
    return [-_ROW_PITCH * _level(stage, result.input_shape) for stage in result.stages]


def _tap_label(name: str, point: str) -> str:
    return f"output: {name}" if point == "output" else f"output: {name} ({point})"


def _parts_panel(axes, result: StaticPass, bases: list[float]) -> None:
    stages = result.stages
    axes.set_xlim(0, len(stages))
    axes.axis("off")
    for index, (stage, base) in enumerate(zip(stages, bases)):
        box = stage.part.box(stage)
        left, right = index + 0.08, index + 0.92
        axes.add_patch(FancyBboxPatch(
            (left, base + 0.04), right - left, 0.92, boxstyle="round,pad=0,rounding_size=0.06",
            facecolor=box.colour, edgecolor="#555555", linewidth=0.8,
        ))
        centre = index + 0.5
        axes.text(centre, base + 0.88, box.title, ha="center", va="center", fontsize=9, weight="bold")
        axes.text(centre, base + 0.77, box.detail, ha="center", va="center", fontsize=8.5)
        if box.sketch_layers:
            _sketch(axes, left, right, box.sketch_layers, base + 0.5)
        axes.text(centre, base + 0.2, _dims(stage.out_shape), ha="center", va="center", fontsize=8.5)
        axes.text(centre, base + 0.1, f"{stage.params:,} params", ha="center", va="center", fontsize=8)
        if index:
            axes.add_patch(FancyArrowPatch(
                (index - 0.08, bases[index - 1] + 0.5), (index + 0.08, base + 0.5), arrowstyle="-|>",
                mutation_scale=8, linewidth=0.8, color="#555555",
            ))
    top = _skips(axes, result, bases)
    bottom = _taps(axes, result, bases)
    axes.set_ylim(bottom, top)


def _skips(axes, result: StaticPass, bases: list[float]) -> float:
    """A bracket from each point a part reads to that part, above the shallower of the two boxes;
    returns the panel's top. In a U the bracket runs in the gap above its row, over the deeper parts."""
    index = {stage.path: position for position, stage in enumerate(result.stages)}
    top = 1.0
    drawn = 0
    for reader, stage in enumerate(result.stages):
        for path, point in stage.reads:
            source = index[path]
            bar = max(bases[source], bases[reader]) + 1.0 + 0.12 + 0.06 * (drawn % 2)
            top = max(top, bar + 0.15)
            start, end = (source + 0.5, bases[source] + 0.96), (reader + 0.3, bases[reader] + 0.96)
            route = MplPath([start, (start[0], bar), (end[0], bar), end],
                            [MplPath.MOVETO, MplPath.LINETO, MplPath.LINETO, MplPath.LINETO])
            arrow = FancyArrowPatch(path=route, arrowstyle="-|>", mutation_scale=9, linewidth=1.1,
                                    color=_SKIP_COLOUR, zorder=2)
            drawn += 1
            arrow.set_gid(f"skip-{drawn}")
            axes.add_patch(arrow)
            taken = path if point == "output" else f"{path}.{point}"
            axes.text((start[0] + end[0]) / 2, bar + 0.02, f"skip {taken}", ha="center", va="bottom",
                      fontsize=7.5, color=_SKIP_COLOUR)
    return top


def _taps(axes, result: StaticPass, bases: list[float]) -> float:
    """A marker and the output's name under the part each named output is taken from; returns the panel's bottom."""
    bottom = min(bases)
    if not result.named:
        return bottom
    index = {stage.path: position for position, stage in enumerate(result.stages)}
    below: dict[str, int] = {}
    for number, output in enumerate(result.outputs, 1):
        position = index[output.path]
        row = below.get(output.path, 0)
        below[output.path] = row + 1
        x, y = position + 0.5, bases[position] + 0.04
        marker = axes.scatter([x], [y], marker="v", s=42, color=_TAP_COLOUR, zorder=4)
        marker.set_gid(f"tap-{number}")
        label_y = y - 0.1 - 0.09 * row
        axes.text(x, label_y, _tap_label(output.name, output.point), ha="center", va="top", fontsize=7.5,
                  color=_TAP_COLOUR, weight="bold")
        bottom = min(bottom, label_y - 0.1)
    return bottom


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
    _parts_panel(parts, result, _bases(result))
    # A chain's one row is one unit high in 6.2 in; a U's rows, skips and taps grow the top panel by its height.
    bottom, top = parts.get_ylim()
    span = top - bottom
    if span > 1:
        parts.get_subplotspec().get_gridspec().set_height_ratios((1.25 * span, 1))
        figure.set_size_inches(width, 6.2 * (1.25 * span + 1) / 2.25)
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
