"""The Python API: nnc.encode / decode / evaluate / info on arrays and files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import nnc
from nnc.errors import NncError
from nnc.media import write_video

from synthetic import synthetic_frames, synthetic_video

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = dict(size="60k", epochs=40, lr=5e-3, device="cpu", show_progress=False, checkpoint_interval=0)


def test_an_array_round_trips_through_encode_decode_evaluate_info(tmp_path):
    frames = synthetic_frames(num_frames=4)  # (4, 64, 128, 3) uint8
    report = nnc.encode(frames, tmp_path / "a.nnc", **FAST)
    assert report.path.exists() and report.file_bytes == report.path.stat().st_size
    decoded = nnc.decode(tmp_path / "a.nnc")
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    quality = nnc.evaluate(frames, decoded)["results"]["psnr-rgb"]
    assert 15 < quality < 60 and quality == pytest.approx(report.psnr, abs=0.01)
    assert nnc.evaluate(frames, tmp_path / "a.nnc")["results"]["psnr-rgb"] == pytest.approx(quality)
    assert np.array_equal(nnc.decode(tmp_path / "a.nnc", frames=(1, 3)), decoded[1:3])
    # frames= is `--frames`: N is the first N, "START:STOP" a range
    assert np.array_equal(nnc.decode(tmp_path / "a.nnc", frames=2), decoded[:2])
    assert np.array_equal(nnc.decode(tmp_path / "a.nnc", frames="2:"), decoded[2:])
    with pytest.raises(NncError, match="STOP must be greater than START"):
        nnc.decode(tmp_path / "a.nnc", frames=(3, 1))
    described = nnc.info(tmp_path / "a.nnc")
    assert described["codec"] == "hnerv" and described["file_bytes"] == report.file_bytes


def test_files_work_too_and_the_output_defaults_beside_the_input(tmp_path):
    clip = tmp_path / "clip.y4m"
    write_video(clip, synthetic_video())  # yuv420p: 60k parameters need 8 frames to stay below raw
    report = nnc.encode(clip, **FAST)
    assert report.path == tmp_path / "clip.nnc" and report.path.exists()
    results = nnc.evaluate(clip, report.path)["results"]
    assert results["psnr-rgb"] == pytest.approx(report.psnr, abs=0.01) and results["bytes"] == report.file_bytes


def test_a_dry_run_returns_the_plan_and_errors_are_nnc_errors(tmp_path):
    plan = nnc.encode(synthetic_frames(num_frames=4), tmp_path / "b.nnc", dry_run=True, **FAST).plan
    assert plan["epochs"] == {"train": 40} and plan["parameters"] > 50_000 and plan["estimated_bpp"] > 0
    half = nnc.encode(synthetic_frames(num_frames=4), tmp_path / "b.nnc", dry_run=True, frames="1:3", **FAST).plan
    assert half["raw_bytes"] * 2 == plan["raw_bytes"]  # two of the four frames
    assert not (tmp_path / "b.nnc").exists()
    with pytest.raises(NncError, match="does not apply to --model hnerv"):
        nnc.encode(synthetic_frames(num_frames=2), tmp_path / "c.nnc", quality=3)
    with pytest.raises(NncError, match=r"\(T, H, W, 3\)"):
        nnc.encode(np.zeros((4, 8, 8), np.uint8), tmp_path / "d.nnc")


def test_import_nnc_stays_light():
    code = "import sys, nnc; assert 'torch' not in sys.modules; assert callable(nnc.decode); print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr
