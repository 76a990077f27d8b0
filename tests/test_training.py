"""The one training loop (nnc.codec.training.fit) and its hooks: loss terms, parameter
constraints, stop conditions, checkpoints; and codecs trained through it."""

from __future__ import annotations

import functools
import math
import signal

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from nnc.bitstream import read_bitstream_file
from nnc.cli.main import main
from nnc.codec.checkpoint import CheckpointPolicy
from nnc.codec.schedule import lr_multiplier, warmup_cosine_lr
from nnc.codec.training import TrainSettings, fit
from nnc.codec.training_hooks import KeepFrozen, KeepPruned, RateTerm, StopWhen, TimeBudget, TrainingHook
from nnc.media import read_video, write_video
from nnc.metrics import mean_psnr, psnr_per_frame

from synthetic import synthetic_frames, synthetic_video

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")


class FrameTable(torch.nn.Module):
    """The smallest INR: one learned image per frame index."""

    def __init__(self, num_frames: int, height: int, width: int):
        super().__init__()
        self.values = torch.nn.Parameter(torch.full((num_frames, 3, height, width), 0.5))

    def forward(self, indices: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.values[indices]


def frames(num_frames: int = 6) -> np.ndarray:
    return synthetic_frames(num_frames=num_frames, height=24, width=32)


def settings(**changes) -> TrainSettings:
    fields = dict(epochs=5, batch_size=2, lr=0.05, loss="l2", seed=1, show_progress=False)
    fields.update(changes)
    return TrainSettings(**fields)


class Recorder(TrainingHook):
    def __init__(self):
        self.calls, self.indices, self.losses = [], [], []

    def start(self, run):
        self.calls.append("start")

    def loss_term(self, step):
        self.calls.append("loss_term")
        self.indices.append(step.indices.tolist())
        return None

    def after_step(self, step):
        self.calls.append("after_step")

    def should_stop(self, run):
        self.calls.append("should_stop")
        return False

    def finish(self, run):
        self.calls.append("finish")


def test_every_hook_is_called_in_order_once_per_step():
    clip = frames()
    recorder = Recorder()
    model = FrameTable(6, 24, 32)
    stats = fit(model, model, clip, 255, settings(), CPU, hooks=[recorder])
    steps = 5 * 3  # 5 epochs of 3 batches of 2 frames
    assert stats["iterations"] == stats["planned_iterations"] == steps and not stats["stopped_early"]
    assert recorder.calls == ["start"] + ["loss_term", "after_step", "should_stop"] * steps + ["finish"]
    # every epoch visits every frame once, in a seeded random order
    for epoch in range(5):
        seen = sum(recorder.indices[epoch * 3 : epoch * 3 + 3], [])
        assert sorted(seen) == list(range(6))
    assert recorder.indices != [[0, 1], [2, 3], [4, 5]] * 5
    assert stats["train_psnr"] > 20  # the table learned the frames (mid grey: ~13 dB)


def test_without_shuffle_batches_come_in_frame_order():
    recorder = Recorder()
    model = FrameTable(6, 24, 32)
    fit(model, model, frames(), 255, settings(epochs=2, batch_size=4), CPU, hooks=[recorder], shuffle=False)
    assert recorder.indices == [[0, 1, 2, 3], [4, 5]] * 2


def test_a_stop_hook_ends_training_early():
    model = FrameTable(6, 24, 32)
    stop = StopWhen(lambda run: run.step >= 4)
    stats = fit(model, model, frames(), 255, settings(), CPU, hooks=[stop])
    assert stats["iterations"] == 4 and stats["planned_iterations"] == 15 and stats["stopped_early"]
    assert math.isfinite(stats["train_loss"]) and math.isfinite(stats["last_mse"])


def test_a_time_budget_spans_runs_and_stops_each_after_one_step():
    budget = TimeBudget(0.0)  # already spent: every run stops after its first step
    for phase in ("train", "finetune"):
        model = FrameTable(6, 24, 32)
        stats = fit(model, model, frames(), 255, settings(phase=phase), CPU, hooks=[budget])
        assert stats["iterations"] == 1 and stats["stopped_early"] and stats["phase"] == phase
    assert budget.spent > 0
    generous = TimeBudget(3600)
    model = FrameTable(6, 24, 32)
    assert fit(model, model, frames(), 255, settings(), CPU, hooks=[generous])["iterations"] == 15


def test_a_rate_hook_adds_its_term_to_the_loss_and_changes_the_result():
    clip = frames()
    pixels = 2 * 24 * 32

    def run(rate_lambda: float):
        torch.manual_seed(0)
        model = FrameTable(6, 24, 32)
        rate = RateTerm(lambda step: step.output.abs().sum() * 8, rate_lambda, pixels)  # "bits" grow with |output|
        stats = fit(model, model, clip, 255, settings(), CPU, hooks=[rate])
        return model, rate, stats

    plain, _, plain_stats = run(0.0)
    costly, rate, costly_stats = run(0.05)
    # the loss is the MSE plus lambda * bits / pixels
    bpp = float(rate.last_bits) / pixels
    assert costly_stats["last_loss"] == pytest.approx(costly_stats["last_mse"] + 0.05 * bpp, rel=1e-5)
    assert plain_stats["last_loss"] == pytest.approx(plain_stats["last_mse"], rel=1e-6)
    # and it shapes training: a rate penalty on |output| pulls the frames towards 0
    assert costly.values.abs().sum() < 0.9 * plain.values.abs().sum()
    assert costly_stats["train_psnr"] < plain_stats["train_psnr"]


def test_mask_hooks_keep_pruned_weights_zero_and_frozen_weights_fixed():
    model = FrameTable(6, 24, 32)
    pruned = torch.rand(model.values.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    frozen = ~pruned & (torch.rand(model.values.shape, generator=torch.Generator().manual_seed(1)) < 0.5)
    with torch.no_grad():
        model.values[pruned] = 0.0
    keep = (~pruned).float()
    before = model.values.detach()[frozen].clone()
    hooks = [KeepPruned(lambda: [(model.values, keep)]), KeepFrozen([(model.values, frozen, before)])]
    fit(model, model, frames(), 255, settings(), CPU, hooks=hooks)
    assert torch.all(model.values[pruned] == 0)
    assert torch.equal(model.values.detach()[frozen], before)
    free = ~pruned & ~frozen
    assert not torch.allclose(model.values.detach()[free], torch.full_like(model.values[free], 0.5))


def test_parameter_groups_keep_their_own_base_learning_rate():
    model = FrameTable(6, 24, 32)
    other = torch.nn.Parameter(torch.zeros(3))
    seen = []

    class Watch(TrainingHook):
        def after_step(self, step):
            seen.append(step.run.step)

    optimizer_lrs = []
    original_step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        optimizer_lrs.append([group["lr"] for group in self.param_groups])
        return original_step(self, *args, **kwargs)

    groups = [{"params": [model.values], "lr": 0.05}, {"params": [other], "lr": 0.001}]
    train = settings(epochs=2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.Adam, "step", recording_step)
        fit(model, model, frames(), 255, train, CPU, hooks=[Watch()], param_groups=groups)
    assert len(optimizer_lrs) == 6 and seen == list(range(6))
    for step, (first, second) in enumerate(optimizer_lrs):
        factor = lr_multiplier(step / 6, train.warmup_fraction, train.warmup_start)
        assert first == pytest.approx(0.05 * factor) and second == pytest.approx(0.001 * factor)


@pytest.mark.parametrize("where", ["signal during the step", "error in after_step", "error in loss_term"])
def test_interrupted_run_resumes_exactly_with_its_hooks_state(tmp_path, where):
    clip = frames()
    reference = FrameTable(6, 24, 32)
    fit(reference, reference, clip, 255, settings(), CPU)

    class Interrupt(TrainingHook):
        def loss_term(self, step):
            if where == "error in loss_term" and step.run.step == 6:
                raise KeyboardInterrupt

        def after_step(self, step):
            if step.run.step == 6:  # during the 3rd epoch, after the optimiser step
                if where == "signal during the step":
                    signal.raise_signal(signal.SIGINT)  # Ctrl-C: deferred until the step is recorded
                    assert step.run.step == 6
                else:
                    raise KeyboardInterrupt

    # a checkpoint after every step; when interrupted inside an optimiser step, the last
    # one stays: what the loop saves always holds weights of the position it records
    policy = CheckpointPolicy(tmp_path / "run.ckpt", interval_seconds=0.0, fingerprint="x")
    budget = TimeBudget(3600)
    budget.spent = 12.5  # e.g. an earlier phase
    model = FrameTable(6, 24, 32)
    with pytest.raises(KeyboardInterrupt):
        fit(model, model, clip, 255, settings(), CPU, policy, hooks=[budget, Interrupt()])
    assert policy.path.exists() and not list(tmp_path.glob("*.tmp"))

    resumed_budget = TimeBudget(3600)
    resumed = FrameTable(6, 24, 32)
    policy.resume = True
    stats = fit(resumed, resumed, clip, 255, settings(), CPU, policy, hooks=[resumed_budget])
    assert stats["resumed_at_step"] == (7 if where == "signal during the step" else 6)
    assert stats["iterations"] == 15
    assert resumed_budget.spent >= 12.5  # the time spent before the interruption still counts
    assert torch.equal(resumed.values, reference.values)


def test_clc_schedule_warms_up_then_decays_to_its_floor():
    assert warmup_cosine_lr(0, 100, 1e-3, 10) == pytest.approx(1e-4)
    assert warmup_cosine_lr(9, 100, 1e-3, 10) == pytest.approx(1e-3)
    assert warmup_cosine_lr(10, 100, 1e-3, 10) == pytest.approx(1e-3)
    assert warmup_cosine_lr(100, 100, 1e-3, 10) == pytest.approx(1e-6)


# ---------------------------------------------------------------- codecs through the loop


def stopping(function, *hooks):
    """``function`` (a codec's reference to fit or fit_chain) with extra hooks."""
    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        kwargs["hooks"] = [*kwargs.get("hooks", ()), *hooks]
        return function(*args, **kwargs)
    return wrapped


@pytest.mark.parametrize("model,module_name,function_name,size,steps", [
    ("hnerv", "nnc.codec.hnerv", "fit", "45k", 3),
    ("nirvana", "nnc.codec.nirvana", "fit_chain", "6000", 2),
])
def test_an_encode_stopped_early_still_writes_a_file_that_decodes(tmp_path, monkeypatch, model, module_name,
                                                                   function_name, size, steps):
    import importlib

    module = importlib.import_module(module_name)
    clip = tmp_path / "clip.y4m"
    write_video(clip, synthetic_video(num_frames=8, height=32, width=64))
    stop = StopWhen(lambda run: run.step >= steps)
    calls = []

    def counting_stop(run):
        calls.append(run.step)
        return stop.should_stop(run)

    monkeypatch.setattr(module, function_name, stopping(getattr(module, function_name), StopWhen(counting_stop)))
    output = tmp_path / "clip.nnc"
    result = CliRunner().invoke(main, ["encode", str(clip), "-o", str(output), "--model", model, "--size", size,
                                       "--epochs", "200", "--device", "cpu", "--quiet", "--force"])
    assert result.exit_code == 0, result.output
    # hnerv: one run of 200 epochs x 4 batches stopped after 3 steps; nirvana: each of the
    # 2 groups (400 and 200 steps planned) stopped after 2 steps
    assert calls == ([1, 2, 3] if model == "hnerv" else [1, 2, 1, 2])
    decoded = tmp_path / "decoded.y4m"
    result = CliRunner().invoke(main, ["decode", str(output), "-o", str(decoded)])
    assert result.exit_code == 0, result.output
    video = read_video(clip)
    frames_out = read_video(decoded).frames
    assert frames_out.shape == video.frames.shape
    psnr = mean_psnr(psnr_per_frame(video.frames, frames_out, 255))
    recorded = read_bitstream_file(output).header["encoder"]["psnr_rgb"]
    # the file holds what the short fit learned: the encoder's PSNR (RGB, its own decode)
    # and ours (through 4:2:0 Y4M, which moves a noisy 2-step fit by a few tenths of a dB)
    assert psnr == pytest.approx(recorded, abs=0.5)
    assert 5 < psnr < 30
