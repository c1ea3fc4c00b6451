"""``archspec build`` and ``archspec validate`` as a user runs them: exit codes and exact lines."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_cli


def test_build_prints_one_line_result() -> None:
    result = run_cli("build", "specs/tutorial.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "tutorial: 758,226 parameters, input (1, 1, 96, 96) -> output (1, 10)"
    ]


def test_build_summary_prints_torchinfo_table_for_declared_input() -> None:
    result = run_cli("build", "specs/densenet121.yaml", "--summary", "--depth", "1", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "Total params: 7,978,856" in lines
    assert any("features" in line and "[2, 1024, 7, 7]" in line for line in lines)
    assert lines[-1] == "densenet121: 7,978,856 parameters, input (2, 3, 224, 224) -> output (2, 1000)"


def test_build_with_override_reports_new_count() -> None:
    result = run_cli("build", "specs/densenet121.yaml", "--set", "head.num_classes=10")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("densenet121: 6,964,106 parameters,")


def test_validate_prints_one_line_per_file() -> None:
    result = run_cli("validate", "specs/tutorial.yaml", "specs/mlp_tabular.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "specs/tutorial.yaml: ok (tutorial, 758,226 parameters, output (10))",
        "specs/mlp_tabular.yaml: ok (mlp_tabular, 2,880,449 parameters, output (1))",
    ]


def test_bad_field_is_one_line_with_path_and_exit_2(tmp_path: Path) -> None:
    result = run_cli("build", "specs/densenet121.yaml", "--set", "body[2].num_layers=0")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("specs/densenet121.yaml:")
    assert "body[2].num_layers: " in line and "(got 0)" in line


def test_input_too_small_names_the_part() -> None:
    # 16×16: the stem leaves 4×4, transitions halve to 2×2, 1×1, then 0×0 at body[5].
    result = run_cli("validate", "specs/densenet121.yaml", "--set", "input.height=16",
                     "--set", "input.width=16")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert "body[5]: spatial size falls below 1×1" in line


def test_missing_file_is_one_line_exit_2() -> None:
    result = run_cli("build", "specs/nope.yaml")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_option_is_usage_error_exit_2() -> None:
    result = run_cli("build", "specs/tutorial.yaml", "--no-such-flag")
    assert result.returncode == 2
    assert "No such option" in result.stderr


def test_build_with_weights_says_what_it_loaded(tmp_path: Path) -> None:
    import torch

    import archspec

    weights = tmp_path / "w.pt"
    torch.save(archspec.build("specs/tutorial.yaml").state_dict(), weights)
    result = run_cli("build", "specs/tutorial.yaml", "--weights", str(weights))
    assert result.returncode == 0, result.stderr
    # 147 tensors: 21 layers (the stem convolution, 16 dense layers, 3 transitions, the classifier), a
    # weight and a bias each, and 21 norms, five each (weight, bias, running mean and variance, batch count).
    assert result.stdout.splitlines() == [
        f"loaded {weights}: 147 tensors, 758,226 parameters",
        "tutorial: 758,226 parameters, input (1, 1, 96, 96) -> output (1, 10)",
    ]
    result = run_cli("build", "specs/tutorial.yaml", "--weights", str(weights), "--print-spec")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [f"loaded {weights}: 147 tensors, 758,226 parameters"]
    assert result.stdout.startswith("archspec: 1\n"), result.stdout[:40]
