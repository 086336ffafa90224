"""``benchmarks/gpu.py --smoke``: the GPU run's every step, on the CPU with tiny sizes, and its JSON.

The GPU machine gets one prepared command (docs/benchmarks.md); this runs the
same script end to end here, so a run there does not fail on a step nobody ran,
and runs it as ``device_wheels.py check`` does: with only the packages the GPU
machine has and those ``make device-wheels`` brings, so a missing wheel fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import OFFLINE, REPO


@pytest.mark.slow
def test_gpu_benchmark_smoke_writes_every_measurement(tmp_path) -> None:
    out = tmp_path / "gpu.json"
    command = [sys.executable, str(REPO / "benchmarks" / "device_wheels.py"), "check", "--smoke"]
    done = subprocess.run(
        [*command, "--out", str(out), "--work", str(tmp_path / "work")],
        cwd=tmp_path,
        env={**os.environ, **OFFLINE},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["smoke"] is True
    environment = report["environment"]
    assert environment["device"] == "cpu" and environment["cores"] >= 1
    for package in ("img_search", "torch", "torchvision", "transformers", "pyarrow", "numpy"):
        assert environment["versions"][package], package
    assert report["settings"] == {
        "images": 48,
        "batch": 8,
        "precision": "fp32",
        "topk_rows": 20_000,
        "dim": 64,
        "loader_workers": 2,
    }
    assert report["images"]["count"] == 48 and report["images"]["mean_kib"] > 0
    assert report["reference"]["clip_retrieval_vit_b32_a100_images_per_s"] == 2_500

    assert sorted(report["models"]) == ["siglip2_base", "vit_b32"]
    for name, model in report["models"].items():
        assert model["dim"] == 32 and model["parameters"] > 0, name
        assert model["model_only_images_per_s"] > 0, name
        cpu = model["pipeline"]["cpu"]
        assert (cpu["rows"], cpu["errors"]) == (48, 0), name
        assert cpu["ratio_to_model_only"] == pytest.approx(
            cpu["images_per_s"] / model["model_only_images_per_s"], rel=0.01, abs=1e-3
        )
        assert {"wait", "forward", "write"} <= set(cpu["stages_s"]), name
        on_device = model["pipeline"]["gpu"]  # JPEGs decoded on the device ("cpu" here)
        assert (on_device["rows"], on_device["errors"]) == (48, 0), name

    exact = report["exact_top_k"]
    assert (exact["rows"], exact["dim"], exact["queries"], exact["k"]) == (20_000, 64, 250, 50)
    assert set(exact["seconds"]) == {"cpu", "torch-cpu"}
    assert exact["identical_top_k_queries"] >= 245  # BLAS sums may differ in the last bit
    assert exact["largest_score_difference"] < 1e-5
    assert report["seconds"] > 0
