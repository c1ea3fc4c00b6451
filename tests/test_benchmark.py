"""``archspec benchmark``: one row per format with its file, its error and its time; skipped formats say why."""

from __future__ import annotations

import importlib.util
import json

import pytest
from click.testing import CliRunner

from archspec.cli import main

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")


def test_benchmark_json_has_a_proven_timed_row_per_format_and_says_why_others_did_not_run() -> None:
    result = CliRunner().invoke(main, ["benchmark", "specs/tutorial.yaml", "--set", "input.height=32", "--set",
                                       "input.width=32", "--formats", "openvino,litert,tensorrt",
                                       "--batch-size", "2", "--rounds", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    rows = {row["format"]: row for row in report["rows"]}
    assert list(rows) == ["pytorch", "openvino", "litert", "tensorrt"]  # torch-export: tests/test_formats.py
    assert report["batches"] == [1, 2] and report["weights"].startswith("fresh, with seeded random norm")
    row = rows["openvino"]
    assert row["skipped"] is None and row["failed"] is None
    assert 0 <= row["max_relative_error"] < 1e-4
    assert sorted(row["milliseconds"]) == ["1", "2"] and row["file_bytes"] > 3_000_000  # 758,226 fp32 weights
    if importlib.util.find_spec("tensorrt") is None:
        assert rows["tensorrt"]["skipped"] == "tensorrt needs tensorrt, which is not installed: pip install 'archspec[tensorrt]'"


def test_benchmark_refuses_an_unknown_format_in_one_line() -> None:
    result = CliRunner().invoke(main, ["benchmark", "specs/tutorial.yaml", "--formats", "onnx,tflite"])
    assert result.exit_code == 2
    assert result.output.startswith("error: --format: unknown format 'tflite'; choose one of onnx, torch-export")
