"""archspec: declarative DenseNet-family architectures, built exactly and exported with proof.

The public API. torch is imported only by the functions that need it, so that
validating a spec stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from archspec.errors import Problem, SpecError
from archspec.spec.load import load_spec
from archspec.spec.schema import Spec
from archspec.spec.shapes import StaticPass, static_pass

if TYPE_CHECKING:
    from archspec.network import DenseNet

__version__ = "0.1.0"

__all__ = [
    "Problem",
    "Spec",
    "SpecError",
    "StaticPass",
    "__version__",
    "build",
    "load_spec",
    "static_pass",
    "summary",
]


def _as_spec(spec: Spec | str | Path | dict[str, Any], overrides: tuple[str, ...] = ()) -> Spec:
    if isinstance(spec, Spec):
        if overrides:
            return load_spec(spec.model_dump(mode="json"), overrides)
        return spec
    return load_spec(spec, overrides)


def build(spec: Spec | str | Path | dict[str, Any], *, overrides: tuple[str, ...] = ()) -> DenseNet:
    """Build the ``torch.nn.Module`` a spec describes, freshly initialised.

    Args:
        spec: a validated ``Spec``, a path to a spec file, or a spec as a mapping.
        overrides: ``PATH=VALUE`` assignments applied before validation.

    Returns:
        A ``DenseNet`` module with ``num_features``, ``forward_features`` and ``forward_head``.

    Raises:
        SpecError: the spec is invalid.
    """
    from archspec.builder import build_module

    return build_module(_as_spec(spec, overrides))


def summary(spec: Spec | str | Path | dict[str, Any], *, depth: int = 3, batch_size: int = 1) -> str:
    """The torchinfo table of a spec's network, for the input size the spec declares.

    Args:
        spec: a validated ``Spec``, a path to a spec file, or a spec as a mapping.
        depth: how many levels of nested modules to show.
        batch_size: batch dimension of the summarised input.

    Returns:
        The table as text.
    """
    from archspec.builder import build_module
    from archspec.summary import summarise

    resolved = _as_spec(spec)
    return summarise(build_module(resolved), resolved, depth=depth, batch_size=batch_size)
