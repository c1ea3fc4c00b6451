"""Benchmark 4: ONNX export time, and onnxruntime latency of the exported DenseNet-121.

Compares ``archspec.export_onnx`` (export, checks, metadata, atomic write; no
verification) with a bare ``torch.onnx.export`` of the same module, then runs the
exported file under onnxruntime against eager PyTorch and against torchvision's
own DenseNet-121 exported the bare way, all holding the same weights.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import onnxruntime
import torch

import archspec
from common import SPECS, densenet_pair, main, median_time, ratio_line

TARGET_VS_TORCHVISION = 1.05  # issue 6: archspec's export runs within 5% of torchvision's


def _bare_export(module: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    torch.onnx.export(
        module, (example,), path, dynamo=True, input_names=["input"],
        dynamic_shapes=({0: "batch", 2: "height", 3: "width"},), external_data=False, verbose=False,
    )


def _session(path: Path, provider: str) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=[provider])


def run(*, smoke: bool) -> list[str]:
    resolution, batches, repeats = (64, (1, 2), 1) if smoke else (224, (1, 16), 7)
    ours, theirs = densenet_pair(smoke=smoke)
    overrides = tuple(f"body[{2 * i}].num_layers=1" for i in range(4)) if smoke else ()
    if smoke:
        overrides += ("input.height=64", "input.width=64")
    example = torch.randn(1, 3, resolution, resolution)
    provider = "CUDAExecutionProvider" if torch.cuda.is_available() else "CPUExecutionProvider"
    lines = [f"export DenseNet-121{' (1 layer per block)' if smoke else ''}, onnxruntime {provider}, "
             f"{resolution}×{resolution}, median of {repeats}"]
    with tempfile.TemporaryDirectory() as folder:
        ours_path, bare_path, vision_path = (Path(folder) / n for n in ("ours.onnx", "bare.onnx", "tv.onnx"))
        weights = Path(folder) / "weights.pt"
        torch.save(ours.state_dict(), weights)  # the weights torchvision's module holds too
        start = time.perf_counter()
        archspec.export_onnx(SPECS / "densenet121.yaml", ours_path, overrides=overrides, weights=weights,
                             verify=False)
        exported = time.perf_counter() - start
        start = time.perf_counter()
        _bare_export(archspec.build(SPECS / "densenet121.yaml", overrides=overrides).eval(), example, bare_path)
        bare = time.perf_counter() - start
        lines.append(ratio_line("archspec.export_onnx (build, load weights, export, checks) / bare "
                                "torch.onnx.export (build, export)", exported, bare, None))
        _bare_export(theirs, example, vision_path)
        sessions = {"archspec": _session(ours_path, provider), "torchvision": _session(vision_path, provider)}
        for batch in batches:
            images = torch.randn(batch, 3, resolution, resolution)
            feeds = {name: {s.get_inputs()[0].name: images.numpy()} for name, s in sessions.items()}
            ort = {name: median_time(lambda n=name: sessions[n].run(None, feeds[n]), repeats=repeats)
                   for name in sessions}
            with torch.no_grad():
                eager = median_time(lambda: ours(images), repeats=repeats)
                difference = abs(sessions["archspec"].run(None, feeds["archspec"])[0] - ours(images).numpy()).max()
            lines.append(ratio_line(f"batch {batch}: onnxruntime archspec / onnxruntime torchvision",
                                    ort["archspec"], ort["torchvision"], TARGET_VS_TORCHVISION, unit="ms"))
            lines.append(ratio_line(f"batch {batch}: onnxruntime archspec / eager PyTorch (max |Δ| {difference:.1e})",
                                    ort["archspec"], eager, None, unit="ms"))
    return lines


if __name__ == "__main__":
    main(run, __doc__)
