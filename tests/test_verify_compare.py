"""The comparison behind export verification: shapes must agree, and NaN or infinity is never close."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from archspec.exporters.report import FP32_TOLERANCE, VerifyReport
from archspec.exporters.verify import Case, compare, resolve_providers, verify

pytestmark = pytest.mark.onnx

LOGITS = np.linspace(-1.0, 1.0, 20, dtype=np.float32).reshape(2, 10)  # (N, classes)


def test_close_outputs_pass_with_their_errors() -> None:
    actual = LOGITS + np.float32(5e-5)
    result = compare("batch 2", (2, 3), actual, LOGITS, FP32_TOLERANCE)
    assert result.passed
    assert (result.outside_tolerance, result.non_finite, result.elements) == (0, 0, 20)
    assert result.max_abs_error == pytest.approx(5e-5, rel=1e-3)
    # the smallest |logit| is 1/19 (linspace's step is 2/19): 5e-5 / (1/19) = 9.5e-4
    assert result.max_rel_error == pytest.approx(9.5e-4, rel=1e-3)
    assert result.describe() == "batch 2 (2, 3): max abs error 5e-05, max rel error 0.00095 (ok)"


def test_one_element_beyond_tolerance_fails() -> None:
    actual = LOGITS.copy()
    actual[1, 9] += 1e-2  # 1.0 + 0.01: beyond 1e-4 + 1e-3 × 1.0
    result = compare("batch 2", (2, 3), actual, LOGITS, FP32_TOLERANCE)
    assert (result.passed, result.outside_tolerance) == (False, 1)
    assert result.describe() == (
        "batch 2 (2, 3): max abs error 0.01, max rel error 0.01 (1 of 20 outputs outside tolerance)"
    )


@pytest.mark.parametrize(("actual", "expected"), [
    (LOGITS[0], LOGITS),  # (10,) broadcasts against (2, 10) and equals its first row
    (LOGITS, LOGITS[:1]),  # (2, 10) against (1, 10): broadcasts too
    (LOGITS.reshape(20), LOGITS),  # same values, flattened
    (LOGITS[:, :3], LOGITS),  # would not broadcast: must still be a result, not an exception
])
def test_different_shapes_fail_whatever_the_values(actual: np.ndarray, expected: np.ndarray) -> None:
    result = compare("batch 2", (2, 3), actual, expected, FP32_TOLERANCE)
    assert not result.passed
    assert (result.output_shape, result.expected_shape) == (actual.shape, expected.shape)
    assert (result.max_abs_error, result.max_rel_error) == (None, None)
    assert result.outside_tolerance == result.elements == expected.size
    assert result.describe() == (
        f"batch 2 (2, 3): output shape {actual.shape}, PyTorch's {expected.shape} (shapes differ)"
    )


def test_the_broadcast_that_used_to_pass() -> None:
    # A (10,) output equal to every row of a (2, 10) one: numpy.allclose calls them close.
    row = LOGITS[0]
    expected = np.stack([row, row])
    assert np.allclose(row, expected)
    assert not compare("batch 2", (2, 3), row, expected, FP32_TOLERANCE).passed


@pytest.mark.parametrize(("where", "value", "outside", "non_finite"), [
    ("actual", np.nan, 1, 1),
    ("expected", np.nan, 1, 1),
    ("both", np.nan, 1, 1),  # the same NaN in both is still not a verified output
    ("actual", np.inf, 1, 1),
    ("both", np.inf, 1, 1),  # inf - inf is NaN
    ("both", -np.inf, 1, 1),
])
def test_nan_and_infinity_fail(where: str, value: float, outside: int, non_finite: int) -> None:
    actual, expected = LOGITS.copy(), LOGITS.copy()
    if where in ("actual", "both"):
        actual[0, 4] = value
    if where in ("expected", "both"):
        expected[0, 4] = value
    result = compare("batch 2", (2, 3), actual, expected, FP32_TOLERANCE)
    assert not result.passed
    assert (result.outside_tolerance, result.non_finite) == (outside, non_finite)
    # the 19 finite pairs are equal: the measured errors stay finite, and JSON can hold them
    assert (result.max_abs_error, result.max_rel_error) == (0.0, 0.0)
    assert result.describe() == (
        "batch 2 (2, 3): max abs error 0, max rel error 0 (1 of 20 outputs outside tolerance, 1 not finite)"
    )


def test_all_nan_has_no_measurable_error() -> None:
    actual = np.full_like(LOGITS, np.nan)
    result = compare("batch 2", (2, 3), actual, LOGITS, FP32_TOLERANCE)
    assert (result.passed, result.outside_tolerance, result.non_finite) == (False, 20, 20)
    assert (result.max_abs_error, result.max_rel_error) == (None, None)
    assert result.describe() == (
        "batch 2 (2, 3): max abs error n/a, max rel error n/a (20 of 20 outputs outside tolerance, 20 not finite)"
    )
    report = VerifyReport("cpu", ("CPUExecutionProvider",), None, FP32_TOLERANCE, (result,))
    summary = report.summary()
    assert (summary["passed"], summary["max_abs_error"], summary["max_rel_error"]) == (False, None, None)
    json.dumps(summary, allow_nan=False)  # strict JSON: no NaN reached the report


class _FirstRowTwice(nn.Module):
    """PyTorch side of the broadcast trap: (N, 10) -> (2, 10), both rows the input's first."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:1].expand(2, -1)


def _first_row_file(path) -> None:
    """ONNX side: (N, 10) -> x[0], shape (10,) — equal to every row PyTorch returns."""
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("zero", TensorProto.INT64, [], [0])),
         helper.make_node("Gather", ["input", "zero"], ["output"], axis=0)],
        "first_row",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 10])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [10])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())


def test_verify_fails_a_file_whose_output_only_broadcasts(tmp_path) -> None:
    path = tmp_path / "first_row.onnx"
    _first_row_file(path)
    report = verify(path, _FirstRowTwice(), [Case("batch 2", (2, 10))], providers=resolve_providers("cpu"),
                    tolerance=FP32_TOLERANCE)
    assert report.error is None
    assert not report.passed
    (case,) = report.cases
    assert (case.output_shape, case.expected_shape) == ((10,), (2, 10))
    assert case.describe() == "batch 2 (2, 10): output shape (10,), PyTorch's (2, 10) (shapes differ)"
