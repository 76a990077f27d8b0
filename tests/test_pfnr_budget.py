"""PFNR sets under a time budget: one plan for all sessions, the estimate line, dry runs."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from nnc.bitstream import read_bitstream_file
from nnc.cli.main import main
from nnc.codec import planning
from nnc.codec.planning import Phase, Recipe, SessionPlanner
from nnc.codec.video_set_api import encode_video_set
from nnc.media import write_video
from nnc.metrics import mean_psnr, psnr_per_frame

from test_budget import FakeRun
from test_pfnr import OPTIONS, clip, decoded, group_chunks

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def sessions_recipe(*steps_per_epoch: int) -> Recipe:
    phases = [Phase(f"session{index}", 100, steps) for index, steps in enumerate(steps_per_epoch)]
    return Recipe("pfnr", phases, parameters=1000, stored_bits=8000.0, pixels=10_000, raw_bits=120_000.0)


def calibrate(planner: SessionPlanner, run: FakeRun, start: float, first: float, per_step: float) -> int:
    """Five steps of ``run`` from clock ``start``: the first takes ``first`` seconds, the
    others ``per_step``; returns the epochs the planner gives the run after them."""
    epochs = 100
    for step in range(1, 6):
        run.step, run.clock = step, start + first + per_step * (step - 1)
        epochs = planner.revise_epochs(run, epochs, 100)
    return epochs


def test_sessions_share_the_budget_by_their_work_and_later_ones_get_what_is_left(monkeypatch):
    clock = SimpleNamespace(now=1000.0)  # the planner's wall clock between sessions
    monkeypatch.setattr(planning, "time", SimpleNamespace(perf_counter=lambda: clock.now))
    lines = []
    planner = SessionPlanner(sessions_recipe(4, 2, 2), 100.0, log=lines.append)
    assert planner.phase_epochs("session0", 100) == 100  # not calibrated yet: as requested
    first = FakeRun("session0", 400)
    epochs = calibrate(planner, first, 0.0, 2.0, 0.5)
    # 90 s of the budget at 0.5 s/step from 5 steps and 4 s spent: 5 + 86 / 0.5 = 177 of the
    # 800 requested steps; one factor for every session, so session 0 (4 steps an epoch)
    # gets twice the time of each of the others (2 steps an epoch)
    assert planner.scale == pytest.approx(177 / 800) and epochs == 22
    assert planner.plan()["epochs"] == {"session0": 22, "session1": 22, "session2": 22}
    assert len(lines) == 1 and lines[0].startswith("nnc: estimate: pfnr") and "3 sessions" in lines[0]
    assert "session0 22 + session1 22 + session2 22" in lines[0] and "planned to fit the 100 s time budget" in lines[0]
    first.step, first.total_steps, first.clock = 88, 88, 4.0 + 83 * 0.5  # session 0 ran as planned: 45.5 s
    planner.finish(first)
    clock.now += 5.0  # quantizing session 0 and decoding it to check it: 5 s of the budget
    # session 1 starts with what is left, the next gap (as long as the last one) set aside
    # for session 2: 90 - 5 - 50.5 = 34.5 s, 69 steps at 0.5 s/step for the 400 requested
    assert planner.phase_epochs("session1", 100) == round(100 * 69 / 400) == 17
    record = planner.sessions["session1"]
    assert record["started_after_seconds"] == pytest.approx(50.5) and record["available_seconds"] == pytest.approx(34.5)
    # session 1 calibrates on its own steps: 1 s a step, so the rest is planned again
    second = FakeRun("session1", 34)
    epochs = calibrate(planner, second, 0.0, 2.0, 1.0)
    assert planner.seconds_per_step == pytest.approx(1.0)
    # 34.5 - 6 s left for session 1's remaining steps and all of session 2's
    assert planner.scale == pytest.approx((5 + 28.5 / 1.0) / 400)
    assert epochs == round(100 * planner.scale) == planner.plan()["epochs"]["session2"]
    plan = planner.plan()
    assert [s["finished"] for s in plan["sessions"]] == [True, False, False]
    assert plan["sessions"][0]["seconds"] == pytest.approx(45.5) and plan["sessions"][0]["epochs"] == 22
    assert plan["sessions"][1]["seconds_per_step"] == pytest.approx(1.0)
    assert plan["sessions"][0]["seconds_per_step"] == pytest.approx(0.5)


def test_without_a_budget_every_session_keeps_its_epochs():
    lines = []
    planner = SessionPlanner(sessions_recipe(4, 2), None, log=lines.append)
    for phase, steps in (("session0", 400), ("session1", 200)):
        assert planner.phase_epochs(phase, 100) == 100
        run = FakeRun(phase, steps)
        assert calibrate(planner, run, 0.0, 2.0, 0.5) == 100
        run.step = steps
        planner.finish(run)
    assert len(lines) == 1 and "600 steps" in lines[0] and "about 5 min" in lines[0]
    assert planner.plan()["epochs"] == {"session0": 100, "session1": 100}


def test_a_two_video_set_fits_a_small_budget_and_decodes_both(tmp_path):
    videos = [clip(8, 0), clip(6, 1)]
    options = replace(OPTIONS, epochs=10**6, time_budget="6s")
    report = encode_video_set([("a", videos[0]), ("b", videos[1])], tmp_path / "set.nnc", options)
    plan = report.plan
    assert plan["time_budget"] == 6 and [s["source"] for s in plan["sessions"]] == ["a", "b"]
    first, second = plan["sessions"]
    assert first["finished"] and second["finished"] and 1 <= first["epochs"] < 10**6 and 1 <= second["epochs"] < 10**6
    # the second session is given what the first (and the check between them) left
    assert second["started_after_seconds"] >= first["seconds"]
    assert second["available_seconds"] == pytest.approx(max(0.9 * 6 - second["started_after_seconds"], 0), abs=1e-6)
    assert [stats["plan"]["phase"] for stats in report.stats] == ["session0", "session1"]
    # The budget is a hard stop (plus at most a step per session); quantizing and checking
    # the last session come after it.  Slack for a loaded 2-core machine, as test_budget.
    assert plan["budget_used_seconds"] < 6 + 10
    assert report.encode_seconds < 2 * 6 + 20
    assert "time budget 6 s: epochs" in report.summary()
    bitstream = read_bitstream_file(tmp_path / "set.nnc")
    records = bitstream.header["model"]["videos"]
    assert [r["settings"]["time_budget"] for r in records] == [6, 6]
    for index, video in enumerate(videos):
        frames = decoded(bitstream, index)
        assert frames.shape == video.frames.shape
        assert mean_psnr(psnr_per_frame(video.frames, frames, 255)) > 12  # learned something: grey is ~11 dB


@pytest.fixture(scope="module")
def one_video_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pfnr_budget")
    encode_video_set([("a", clip(6, 0))], folder / "set.nnc", replace(OPTIONS, epochs=2))
    write_video(folder / "c.y4m", clip(5, 2))
    return folder


FAST = ["--lr", "1e-2", "--loss", "l2", "--batch-size", "2", "--device", "cpu"]


def test_append_with_a_budget_plans_its_one_session(one_video_set, tmp_path):
    target = tmp_path / "set.nnc"
    shutil.copy(one_video_set / "set.nnc", target)
    before = target.read_bytes()
    result = cli("append", target, one_video_set / "c.y4m", "--time-budget", "3s", "--epochs", "1000000", "--quiet",
                 *FAST)
    assert result.exit_code == 0, result.output
    assert "time budget 3 s: epochs" in result.stdout
    data = target.read_bytes()
    assert group_chunks(data)[:1] == group_chunks(before)  # the first video's bytes untouched
    bitstream = read_bitstream_file(target)
    record = bitstream.header["model"]["videos"][1]
    assert record["settings"]["time_budget"] == 3 and record["settings"]["epochs"] == 10**6
    assert decoded(bitstream, 1).shape == (5, 64, 128, 3)


def test_dry_runs_print_the_plan_and_write_nothing(one_video_set, tmp_path):
    for index, seed in enumerate((0, 1)):
        write_video(tmp_path / f"v{index}.y4m", clip(6 - index, seed))
    listing = sorted(p.name for p in tmp_path.iterdir())
    result = cli("encode", tmp_path / "v0.y4m", tmp_path / "v1.y4m", "--model", "pfnr", "-o", tmp_path / "set.nnc",
                 "--params", "120k", "--epochs", "300", "--time-budget", "20m", "--dry-run", "--json", *FAST)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["dry_run"] and plan["codec"] == "pfnr" and plan["time_budget"] == 1200
    assert [s["source"] for s in plan["sessions"]] == [str(tmp_path / "v0.y4m"), str(tmp_path / "v1.y4m")]
    assert plan["estimated_bytes"] > 0 and plan["estimated_seconds"] > 0
    assert "dry run (nothing written): model pfnr" in result.stderr and "2 sessions" in result.stderr
    assert "nnc: estimate: pfnr" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # no set, no lock, no checkpoint
    # append: the set stays as it was, and no lock file is left beside it
    target = tmp_path / "set.nnc"
    shutil.copy(one_video_set / "set.nnc", target)
    before = target.read_bytes()
    result = cli("append", target, one_video_set / "c.y4m", "--epochs", "50", "--dry-run", "--quiet", *FAST)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("dry run (nothing written): model pfnr") and "1 session" in result.stdout
    assert "c.y4m 50 epochs (150 steps)" in result.stdout and f"{len(before):,} bytes, left unchanged" in result.stdout
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(listing + ["set.nnc"])


def test_a_bad_budget_is_a_one_line_error(one_video_set, tmp_path):
    target = tmp_path / "set.nnc"
    shutil.copy(one_video_set / "set.nnc", target)
    for args, fragment in [
        (["encode", one_video_set / "c.y4m", one_video_set / "c.y4m", "--model", "pfnr", "-o", tmp_path / "x.nnc",
          "--time-budget", "soon"], "--time-budget 'soon': expected a duration like 90s, 20m or 2h"),
        (["append", target, one_video_set / "c.y4m", "--time-budget", "-5m"], "--time-budget '-5m': must be a positive"),
    ]:
        result = cli(*args)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("nnc: ") and fragment in lines[0]
    assert not (tmp_path / "x.nnc").exists() and target.read_bytes() == (one_video_set / "set.nnc").read_bytes()
