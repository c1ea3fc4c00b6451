"""A spec's ``preprocess:`` in the exported file: as metadata always, in the graph on request.

The serving side reads ``archspec.preprocess`` (the spec's preprocessing as JSON) instead of
guessing it; ``archspec.preprocess_baked`` says whether the normalisation is already inside
the graph, so that it is not applied twice. Baking prepends ``Sub`` and ``Div`` nodes, so the
file takes unnormalised input (pixels in [0, 1]) under the same input name.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import helper, numpy_helper

from archspec.errors import Problem, SpecError
from archspec.format.preprocess import Preprocess
from archspec.format.schema import Spec

PREPROCESS_KEY = "archspec.preprocess"
BAKED_KEY = "archspec.preprocess_baked"


def preprocess_json(preprocess: Preprocess) -> str:
    """The fields the spec gives, in the schema's order: ``{"mean": [0.286], "std": [0.353]}``."""
    return json.dumps(preprocess.model_dump(mode="json", exclude_none=True), ensure_ascii=False)


def preprocess_metadata(spec: Spec, *, baked: bool) -> dict[str, str]:
    """The ``metadata_props`` entries for a spec's preprocessing; none when it declares none."""
    if spec.preprocess is None:
        return {}
    return {PREPROCESS_KEY: preprocess_json(spec.preprocess), BAKED_KEY: json.dumps(baked)}


def check_bakeable(spec: Spec) -> None:
    """Refuse ``bake_preprocess`` for a spec without a mean and std to bake.

    Raises:
        SpecError: one line saying what the spec lacks.
    """
    if spec.preprocess is None or spec.preprocess.mean is None:
        raise SpecError(Problem("the spec declares no preprocess mean and std to put into the graph; "
                                "add preprocess: {mean: [...], std: [...]}", option="--bake-preprocess"))


def _per_channel(values: list[float], sample_shape: tuple[int, ...]) -> np.ndarray:
    """``(C,)`` values shaped ``(C, 1, …)`` to broadcast over ``(N, C, *spatial)``; ``(F,)`` for features."""
    return np.asarray(values, dtype=np.float32).reshape(len(values), *[1] * (len(sample_shape) - 1))


def normalise(inputs: np.ndarray, preprocess: Preprocess, sample_shape: tuple[int, ...]) -> np.ndarray:
    """``(x - mean) / std`` per channel, in float32: what the PyTorch module takes from raw input."""
    assert preprocess.mean is not None and preprocess.std is not None
    mean, std = _per_channel(preprocess.mean, sample_shape), _per_channel(preprocess.std, sample_shape)
    return ((inputs.astype(np.float32) - mean) / std).astype(np.float32)


def bake_normalisation(model: onnx.ModelProto, preprocess: Preprocess,
                       sample_shape: tuple[int, ...]) -> onnx.ModelProto:
    """A copy of an fp32 ``model`` that normalises its input itself.

    Args:
        model: a float32 graph with one input, ``(N, *sample_shape)``.
        preprocess: the spec's preprocessing; its mean and std are used.
        sample_shape: one input's shape, ``(C, *spatial)`` or ``(features,)``.

    Returns:
        The graph with ``Sub(mean)`` and ``Div(std)`` in front; the input keeps its name and shape.
    """
    assert preprocess.mean is not None and preprocess.std is not None
    baked = onnx.ModelProto()
    baked.CopyFrom(model)
    graph = baked.graph
    raw = graph.input[0].name
    centred, normalised = f"{raw}/centred", f"{raw}/normalised"
    for node in graph.node:
        node.input[:] = [normalised if name == raw else name for name in node.input]
    for key, values in (("preprocess.mean", preprocess.mean), ("preprocess.std", preprocess.std)):
        graph.initializer.append(numpy_helper.from_array(_per_channel(values, sample_shape), key))
    front = [
        helper.make_node("Sub", [raw, "preprocess.mean"], [centred], name="preprocess/subtract_mean"),
        helper.make_node("Div", [centred, "preprocess.std"], [normalised], name="preprocess/divide_std"),
    ]
    nodes = [*front, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    return baked
