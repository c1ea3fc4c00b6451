"""``archspec diagram``: every reference spec renders to a valid SVG with its labels, PNG
has the expected size, bad output paths leave nothing behind, and torch is never imported."""

from __future__ import annotations

import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

import archspec
from archspec.cli import main
from archspec.format.parts import DenseBlock
from tests.conftest import ROOT, SPEC_FILES

SVG_TEXT = "{http://www.w3.org/2000/svg}text"


def _labels(path: Path) -> list[str]:
    """Every text element of an SVG (matplotlib writes text as text with svg.fonttype none)."""
    return ["".join(node.itertext()).strip() for node in ET.parse(path).getroot().iter(SVG_TEXT)]


@pytest.mark.parametrize("spec_path", SPEC_FILES, ids=[p.stem for p in SPEC_FILES])
def test_every_spec_renders_svg_with_its_labels(spec_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "net.svg"
    result = CliRunner().invoke(main, ["diagram", str(spec_path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    spec = archspec.load_spec(spec_path)
    assert result.output == f"{spec.name}: wrote {out}\n"
    labels = _labels(out)
    passed = archspec.static_pass(spec)
    title = f"{spec.name}: {passed.params:,} parameters, input " + "×".join(str(d) for d in passed.input_shape)
    assert title in labels
    blocks = [stage.part for stage in passed.stages if isinstance(stage.part, DenseBlock)]
    assert len(blocks) == sum(part.type == "dense_block" for part in spec.body)
    for number, block in enumerate(blocks, 1):
        assert f"dense block {number}" in labels
        size = f"{block.num_layers} × {block.growth_rate}"
        assert size in labels or f"{size}, new only" in labels  # a segmentation block's new features only
        assert f"block {number}" in labels  # the channel panel
    for stage in passed.stages:
        assert "×".join(str(d) for d in stage.out_shape) in labels
        assert f"{stage.params:,} params" in labels
    assert labels.count("stem") == 1
    assert spec.head.type in labels


def test_densenet121_golden_labels(tmp_path: Path) -> None:
    out = tmp_path / "d.svg"
    assert CliRunner().invoke(main, ["diagram", "specs/densenet121.yaml", "-o", str(out)]).exit_code == 0
    labels = _labels(out)
    # torchvision's DenseNet-121: blocks (6, 12, 24, 16), growth 32, 7,978,856 parameters,
    # block outputs 256×56×56, 512×28×28, 1024×14×14, 1024×7×7.
    assert "densenet121: 7,978,856 parameters, input 3×224×224" in labels
    for text in ("6 × 32", "12 × 32", "24 × 32", "16 × 32", "256×56×56", "512×28×28", "1024×14×14",
                 "1024×7×7", "conv 7×7/2, max pool", "×0.5, avg pool", "1000 classes", "channels through depth"):
        assert text in labels, text


def test_png_has_signature_and_size(tmp_path: Path) -> None:
    out = tmp_path / "tutorial.png"
    result = CliRunner().invoke(main, ["diagram", "specs/tutorial.yaml", "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # Nine parts × 1.75 in = 15.75 in by 6.2 in, at 150 dpi.
    assert struct.unpack(">II", data[16:24]) == (2362, 930)


def test_override_changes_the_drawing(tmp_path: Path) -> None:
    out = tmp_path / "t.svg"
    result = CliRunner().invoke(
        main, ["diagram", "specs/tutorial.yaml", "--set", "body[0].num_layers=6", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "6 × 32" in _labels(out)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("net.pdf", "error: --output: must end in .svg or .png, got '{out}'"),
        ("missing/net.svg", "{out}: output directory '{out.parent}' does not exist"),
    ],
)
def test_bad_output_exit_2_and_nothing_written(tmp_path: Path, name: str, message: str) -> None:
    out = tmp_path / name
    result = CliRunner().invoke(main, ["diagram", "specs/tutorial.yaml", "-o", str(out)])
    assert result.exit_code == 2
    assert result.output == message.format(out=out) + "\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == []


def test_bad_spec_fails_like_build(tmp_path: Path) -> None:
    out = tmp_path / "net.svg"
    result = CliRunner().invoke(main, ["diagram", "specs/tutorial.yaml", "--set", "body[0].num_layers=0",
                                       "-o", str(out)])
    build = CliRunner().invoke(main, ["build", "specs/tutorial.yaml", "--set", "body[0].num_layers=0"])
    assert (result.exit_code, result.output) == (build.exit_code, build.output)
    assert result.exit_code == 2
    assert not out.exists()


def test_diagram_never_imports_torch(tmp_path: Path) -> None:
    out = tmp_path / "net.svg"
    code = (
        "import sys; from archspec.cli import main\n"
        "try:\n"
        f"    main(['diagram', 'specs/tutorial.yaml', '-o', {str(out)!r}])\n"
        "except SystemExit as done:\n"
        "    print(done.code, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "0 False"
    assert out.stat().st_size > 0


def _ids(path: Path, prefix: str) -> list[str]:
    """The ids of the groups the diagram names (``skip-1``, ``tap-2``), in drawing order."""
    return [node.get("id") for node in ET.parse(path).getroot().iter("{http://www.w3.org/2000/svg}g")
            if node.get("id", "").startswith(prefix)]


def _heights(path: Path) -> dict[str, float]:
    """Each text's y in the SVG (larger is lower on the page), by its words."""
    return {"".join(node.itertext()).strip(): float(node.get("y"))
            for node in ET.parse(path).getroot().iter(SVG_TEXT)}


@pytest.mark.parametrize(
    ("spec_name", "skips"),
    [
        # FC-DenseNet56: each up path's concat reads the output of the matching down dense block.
        ("fc_densenet56", ["body[8]", "body[6]", "body[4]", "body[2]", "body[0]"]),
        # smp's U-Net: decoder blocks read each transition's activation and the stem's, before the pools.
        ("unet_densenet121", ["body[5].activation", "body[3].activation", "body[1].activation", "stem.activation"]),
    ],
)
def test_segmentation_is_a_u_with_one_arc_per_skip(spec_name: str, skips: list[str], tmp_path: Path) -> None:
    out = tmp_path / "u.svg"
    spec_path = ROOT / "specs" / "segmentation" / f"{spec_name}.yaml"
    assert CliRunner().invoke(main, ["diagram", str(spec_path), "-o", str(out)]).exit_code == 0
    passed = archspec.static_pass(archspec.load_spec(spec_path))
    reads = [f"skip {path}" if point == "output" else f"skip {path}.{point}"
             for stage in passed.stages for path, point in stage.reads]
    assert reads == [f"skip {taken}" for taken in skips]
    assert _ids(out, "skip-") == [f"skip-{n}" for n in range(1, len(skips) + 1)]
    assert [label for label in _labels(out) if label.startswith("skip ")] == reads
    assert _ids(out, "tap-") == []  # no named outputs
    # The U: one row lower per transition's halving, the deepest parts (÷32) at the bottom, the head back on top.
    y = {label: round(height, 1) for label, height in _heights(out).items()}
    last, deepest = ("transition 5", "dense block 6") if spec_name == "fc_densenet56" else ("transition 3", "norm")
    down = [y["stem"], *(y[f"transition {n}"] for n in range(1, int(last[-1]) + 1))]
    assert down == sorted(set(down)), down
    assert y[deepest] == y[last]
    assert y["segmentation"] <= y["stem"]  # FC-DenseNet's stem keeps the size; the U-Net's halves it twice
    if spec_name == "fc_densenet56":
        up = [y[f"dense block {n}"] for n in range(6, 12)]
        assert up == sorted(set(up), reverse=True), up


def test_a_chain_has_no_skip_arcs(tmp_path: Path) -> None:
    out = tmp_path / "d.svg"
    assert CliRunner().invoke(main, ["diagram", "specs/densenet121.yaml", "-o", str(out)]).exit_code == 0
    assert _ids(out, "skip-") == [] and _ids(out, "tap-") == []
    y = {label: round(height, 1) for label, height in _heights(out).items()}
    assert y["stem"] == y["transition 3"] == y["classifier"]  # one row


def test_named_outputs_are_marked_where_they_are_taken(tmp_path: Path) -> None:
    out = tmp_path / "b.svg"
    outputs = ("outputs=[{name: stem, at: stem.activation}, {name: c2, at: 'body[0]'}, {name: c3, at: 'body[2]'},"
               " {name: c5, at: 'head.activation'}, {name: pooled, at: head.norm}]")
    result = CliRunner().invoke(main, ["diagram", "specs/densenet121.yaml", "--set", outputs, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert _ids(out, "tap-") == ["tap-1", "tap-2", "tap-3", "tap-4", "tap-5"]
    taps = [label for label in _labels(out) if label.startswith("output: ")]
    assert taps == ["output: stem (activation)", "output: c2", "output: c3", "output: c5 (activation)",
                    "output: pooled (norm)"]
    y = {label: round(height, 1) for label, height in _heights(out).items()}
    # Under the part each is taken from: two taps on the head stack one under the other.
    assert y["output: stem (activation)"] == y["output: c2"] == y["output: c5 (activation)"] > y["stem"]
    assert y["output: pooled (norm)"] > y["output: c5 (activation)"]
