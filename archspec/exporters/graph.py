"""An ONNX graph written node by node at one opset: what the emitters append to.

Values are named after the modules that make them (``features.denseblock1.denselayer1.conv1``)
and weights after their state-dict keys, so a node in the file leads back to its module.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from torch import Tensor

Dims = Sequence[int | str]
"""A tensor's dims: numbers where fixed, names (``batch``, ``height``) where dynamic."""


class Graph:
    """Nodes and initializers in the order they are appended, for one default-domain opset."""

    def __init__(self, opset: int):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._names: set[str] = set()
        self._constants: dict[tuple[str, bytes, tuple[int, ...]], str] = {}
        self.values: dict[str, str] = {}
        """The value each module's output is, by the module's qualified name: what skips and
        named outputs read."""

    def _unique(self, name: str) -> str:
        """``name``, or ``name.2``, ``name.3``… if a value already has it."""
        candidate, number = name, 1
        while candidate in self._names:
            number += 1
            candidate = f"{name}.{number}"
        self._names.add(candidate)
        return candidate

    def claim(self, name: str) -> str:
        """Reserve a name for a value made outside ``op`` (the graph input)."""
        return self._unique(name)

    def weight(self, name: str, tensor: Tensor) -> str:
        """A float32 initializer holding ``tensor`` (a parameter or buffer), named after its key."""
        array = tensor.detach().cpu().numpy().astype(np.float32, copy=False)
        return self._initializer(name, array)

    def _initializer(self, name: str, array: np.ndarray) -> str:
        name = self._unique(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def constant(self, values: Sequence[float] | float, dtype: type = np.float32) -> str:
        """A small constant (a shape, a scalar), shared by every node that uses the same one."""
        array = np.asarray(values, dtype=dtype)
        key = (array.dtype.str, array.tobytes(), array.shape)
        if key not in self._constants:
            kind = "shape" if dtype is np.int64 else "scalar"
            self._constants[key] = self._initializer(f"const.{kind}", array)
        return self._constants[key]

    def op(self, op_type: str, inputs: Sequence[str], *, name: str, **attributes: object) -> str:
        """Append one node with one output, named ``name`` (made unique); return the output."""
        output = self._unique(name)
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=output, **attributes))
        return output

    def model(self, *, input_name: str, input_dims: Dims,
              outputs: Sequence[tuple[str, str, Dims]]) -> onnx.ModelProto:
        """The finished model: float32 input and outputs, each ``(value, name, dims)``. A value no
        node reads is renamed; one that nodes read (a backbone's map) is given out by an Identity."""
        read = {value for node in self.nodes for value in node.input}
        renamed: dict[str, str] = {}
        for value, name, _ in outputs:
            if value in read or value in renamed or value == input_name:
                self.nodes.append(helper.make_node("Identity", [renamed.get(value, value)], [name], name=name))
                continue
            for node in self.nodes:
                node.output[:] = [name if output == value else output for output in node.output]
            renamed[value] = name
        graph = helper.make_graph(
            self.nodes,
            "archspec",
            [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_dims))],
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(dims)) for _, name, dims in outputs],
            initializer=self.initializers,
        )
        opsets = [helper.make_opsetid("", self.opset)]
        # The oldest IR version that carries this opset: runtimes that know the opset read it.
        return helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets),
                                 producer_name="archspec")
