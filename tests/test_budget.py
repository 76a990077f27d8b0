"""Planning a training run: time budgets, the estimate line, --dry-run, the size check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from nnc.cli.main import main
from nnc.codec.hnerv import HNeRVOptions
from nnc.codec.planning import Phase, PlanOnly, Recipe, SchedulePlanner, parse_duration
from nnc.codec.training import TrainSettings, fit
from nnc.codec.training_hooks import TrainingRun
from nnc.codec.video_api import decode_frames, encode_video
from nnc.bitstream import read_bitstream_file
from nnc.errors import NncError
from nnc.media import write_video
from nnc.metrics import mean_psnr, psnr_per_frame

from synthetic import synthetic_video

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = dict(size=6e4, lr=5e-3, device="cpu", show_progress=False, checkpoint_interval=0)


def recipe(**changes) -> Recipe:
    fields = dict(model="hnerv", phases=[Phase("train", 100, 2), Phase("finetune", 10, 2)], parameters=1000,
                  stored_bits=8000.0, pixels=10_000, raw_bits=120_000.0)
    return Recipe(**{**fields, **changes})


class FakeRun(TrainingRun):
    """A run whose clock is set by the test."""

    clock = 0.0

    @property
    def seconds(self) -> float:
        return self.clock


def test_durations_parse_with_units_and_bad_ones_are_one_line_errors():
    assert parse_duration("90s") == 90 and parse_duration("20m") == 1200 and parse_duration("2h") == 7200
    assert parse_duration("1.5h") == 5400 and parse_duration(45) == 45 and parse_duration("30") == 30
    for bad in ("soon", "-5m", "0", "inf"):
        with pytest.raises(NncError, match="--time-budget"):
            parse_duration(bad)
    assert HNeRVOptions(time_budget="20m").time_budget == 1200


def test_a_budget_scales_every_phase_to_fit_after_calibration():
    lines = []
    planner = SchedulePlanner(recipe(), 100.0, log=lines.append)
    run = FakeRun("train", 200)
    assert planner.phase_epochs("train", 100) == 100  # not calibrated yet: as requested
    for step in range(1, 6):  # 0.5 s per step, the first one 2 s (one-off costs)
        run.step, run.clock = step, 2.0 + 0.5 * (step - 1)
        epochs = planner.revise_epochs(run, 100, 100)
    assert planner.seconds_per_step == pytest.approx(0.5)
    # 90 s of the budget at 0.5 s/step from 5 steps and 4 s spent: 5 + 86 / 0.5 = 177 of 220 steps
    assert planner.scale == pytest.approx(177 / 220)
    assert epochs == round(100 * 177 / 220) and planner.phase_epochs("finetune", 10) == round(10 * 177 / 220)
    assert len(lines) == 1 and "planned to fit the 100 s time budget" in lines[0] and "train 80 + finetune 8" in lines[0]
    # the plan travels in checkpoints: a resumed planner follows it without calibrating again
    resumed = SchedulePlanner(recipe(), 100.0, log=lines.append)
    resumed.load_state_dict(planner.state_dict())
    assert resumed.phase_epochs("train", 100) == epochs and len(lines) == 1


def test_a_run_that_slows_down_after_calibration_is_planned_again_to_fit():
    lines = []
    planner = SchedulePlanner(recipe(), 100.0, log=lines.append)
    run = FakeRun("train", 200)
    for step in range(1, 6):  # calibrated at 0.5 s/step, as above: 177 of 220 steps planned
        run.step, run.clock = step, 2.0 + 0.5 * (step - 1)
        planner.revise_epochs(run, 100, 100)
    planned = planner.phase_epochs("train", 100)
    steady = SchedulePlanner(recipe(), 100.0, log=None)
    steady.load_state_dict(planner.state_dict())
    clock = run.clock
    for step in range(6, 41):  # the same pace: the plan stands
        run.step, run.clock = step, clock + 0.5 * (step - 5)
        assert steady.revise_epochs(run, planned, 100) == planned
    assert steady.replans == 0
    epochs = planned
    for step in range(6, 41):  # another job starts: 1 s a step from here on
        run.step, run.clock = step, clock + 1.0 * (step - 5)
        epochs = planner.revise_epochs(run, epochs, 100)
    assert planner.replans >= 1 and epochs < planned
    # the pace since calibration (1 s/step over 35 steps) plans the rest: every phase scaled alike
    assert planner.seconds_per_step == pytest.approx(1.0, rel=0.05)
    remaining = (100 * 0.9 - run.clock) / planner.seconds_per_step
    assert planner.scale * 220 == pytest.approx(run.step + remaining, rel=0.01)
    assert planner.phase_epochs("finetune", 10) == round(10 * planner.scale) < round(10 * 177 / 220)
    assert any(line.startswith("nnc: re-planned after") and "time budget" in line for line in lines)
    resumed = SchedulePlanner(recipe(), 100.0, log=None)  # the new plan travels in checkpoints
    resumed.load_state_dict(planner.state_dict())
    assert resumed.phase_epochs("train", 100) == epochs and resumed.replans == planner.replans
    # the other job ends: 0.5 s a step again; the last stretch's pace plans the rest up again
    slow_scale, replans, clock, last = planner.scale, planner.replans, run.clock, run.step
    for step in range(last + 1, last + 41):
        run.step, run.clock = step, clock + 0.5 * (step - last)
        epochs = planner.revise_epochs(run, epochs, 100)
    assert planner.replans > replans and planner.scale > slow_scale
    assert planner.seconds_per_step == pytest.approx(0.5, rel=0.05)
    assert planner.scale * 220 == pytest.approx(run.step + (90 - run.clock) / 0.5, rel=0.02)


def test_without_a_budget_the_estimate_keeps_the_epochs_and_advises_when_long():
    lines = []
    planner = SchedulePlanner(recipe(phases=[Phase("train", 3000, 10)]), None, log=lines.append)
    run = FakeRun("train", 30_000)
    for step in range(1, 6):
        run.step, run.clock = step, 0.2 * step
        assert planner.revise_epochs(run, 3000, 3000) == 3000
    assert "30,000 steps" in lines[0] and "about 100 min" in lines[0]
    assert "--time-budget" in lines[0] and "--frames" in lines[0] and "a smaller --params" in lines[0] and "GPU" in lines[0]
    short = []
    SchedulePlanner(recipe(), None, log=short.append, calibration_steps=1).revise_epochs(FakeRun("train", 2, step=2), 100, 100)
    assert short and "--time-budget" not in short[0]


def test_a_planned_run_lays_the_whole_cosine_over_the_planned_steps():
    """The loop takes the planner's length: its last step runs at the end of the cosine."""
    frames = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    model = torch.nn.Conv2d(3, 3, 1)
    planner = SchedulePlanner(recipe(phases=[Phase("train", 1000, 2)]), None, log=None)
    planner.scale, planner.budget = 0.005, 1e9  # as if calibrated under a budget: 5 of the 1000 epochs
    settings = TrainSettings(epochs=1000, batch_size=2, lr=1e-2, show_progress=False)
    seen = []
    original = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    torch.optim.Adam.step = spy
    try:
        stats = fit(lambda i, t: model(t), model, frames, 255, settings, torch.device("cpu"), hooks=[planner])
    finally:
        torch.optim.Adam.step = original
    assert stats["iterations"] == stats["planned_iterations"] == 10 and not stats["stopped_early"]
    assert max(seen) == pytest.approx(1e-2, rel=0.05)  # the warm-up reached the peak...
    assert seen[-1] < 0.1 * 1e-2  # ...and the last step is at the end of the cosine, not cut off


def test_a_tiny_clip_with_a_five_second_budget_finishes_in_time_and_decodes(tmp_path):
    video = synthetic_video()  # 8 frames of 128x64; 60k parameters stay below its raw size
    report = encode_video(video, tmp_path / "clip.nnc", "hnerv", HNeRVOptions(time_budget="5s", epochs=10**6, **SMALL))
    plan = report.stats["plan"]
    assert plan["time_budget"] == 5 and plan["epochs"]["train"] < 10**6
    # The budget is a hard stop on training (plus at most one step); quantizing and the
    # verifying decode come after it.  Slack for a loaded 2-core machine.
    assert report.stats["train_seconds"] < 5 + 10
    assert report.encode_seconds < 5 + report.stats["quantize_seconds"] + report.stats["verify_decode_seconds"] + 20
    frames = np.concatenate(list(decode_frames(read_bitstream_file(tmp_path / "clip.nnc"))))
    assert frames.shape == video.frames.shape
    assert mean_psnr(psnr_per_frame(video.frames, frames, 255)) > 10


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    clip = tmp_path / "clip.y4m"
    write_video(clip, synthetic_video())
    output = tmp_path / "clip.nnc"
    result = cli("encode", clip, "-o", output, "--size", "60k", "--epochs", "400", "--device", "cpu", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dry run (nothing written): model hnerv" in result.stdout
    assert "epochs train 400 (1,600 steps)" in result.stdout and "bpp" in result.stdout
    assert "nnc: estimate: hnerv" in result.stderr and "1,600 steps" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.y4m"]  # no file, no checkpoint


def test_a_file_larger_than_the_raw_video_is_refused_unless_forced(tmp_path):
    clip = tmp_path / "clip.y4m"
    write_video(clip, synthetic_video(num_frames=2, height=32, width=64))
    output = tmp_path / "clip.nnc"
    refused = cli("encode", clip, "-o", output, "--size", "200k", "--epochs", "1", "--device", "cpu", "--quiet")
    assert refused.exit_code == 1 and not output.exists()
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnc: hnerv with ") and "more than the raw video's" in lines[0]
    assert "--force" in lines[0] and "bpp" in lines[0]
    assert "more than the raw video's 6.0 KiB (12.0 bpp)" in lines[0], lines[0]  # 64x32x2 at 12 bits a pixel
    forced = cli("encode", clip, "-o", output, "--size", "200k", "--epochs", "1", "--device", "cpu", "--quiet",
                 "--force", "--checkpoint-interval", "0")
    assert forced.exit_code == 0, forced.output
    assert "nnc: warning: hnerv with" in forced.stderr and output.exists()


def test_time_budget_and_dry_run_do_not_apply_to_images(tmp_path):
    result = cli("encode", tmp_path / "x.png", "-o", tmp_path / "x.nnc", "--model", "clc", "--time-budget", "5m")
    assert result.exit_code != 0 and "--time-budget does not apply to --model clc" in result.stderr


def test_a_dry_run_with_a_rate_target_shows_the_target_as_the_size(tmp_path):
    clip = tmp_path / "clip.y4m"
    write_video(clip, synthetic_video())  # 8 frames of 128x64: 65,536 pixels
    result = cli("encode", clip, "-o", tmp_path / "clip.nnc", "--bpp", "4", "--epochs", "3", "--device", "cpu",
                 "--dry-run")
    assert result.exit_code == 0, result.output
    # the file lands at or under the target: that, not the 8-bit upper estimate, is its size
    assert "estimated size at most about 4.000 bpp (32,768 bytes, the rate target)" in result.stdout, result.stdout
