"""benchmarks/paper_protocol.py builds each paper's settings (plan only, nothing trained)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "paper_protocol.py"


def dry_run(model: str, *extra: str) -> dict:
    result = subprocess.run([sys.executable, str(SCRIPT), "--model", model, "--dry-run", *extra],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


@pytest.mark.parametrize("model", ["hnerv", "nerv", "nervpp", "hinerv"])
def test_bunny_models_run_the_gpu_tier(model):
    plan = dry_run(model)
    (command,) = plan["commands"]
    assert command[1].endswith("benchmarks/bunny.py")
    assert command[command.index("--tier") + 1] == "gpu" and command[command.index("--model") + 1] == model
    assert plan["published"]


def test_nirvana_encodes_each_uvg_video_at_the_authors_settings(tmp_path):
    plan = dry_run("nirvana", "--uvg", str(tmp_path))
    commands = plan["commands"]
    assert len(commands) == 7
    inputs = [c[c.index("encode") + 1] for c in commands]
    assert inputs[0] == str(tmp_path / "Beauty_1920x1080_120fps_420_8bit_YUV.yuv")
    for command in commands:
        assert command[command.index("--lambda") + 1] == "0.001"
        from nnc.models.nirvana import scaled_config
        assert "--size" not in command  # the deprecated spelling of both
        assert command[command.index("--video-size") + 1] == "1920x1080"
        assert command[command.index("--params") + 1] == str(scaled_config(512).parameter_count())
    assert "37.70" in plan["published"]


def test_pfnr_learns_uvg8_as_one_set_with_the_authors_recipe(tmp_path):
    plan = dry_run("pfnr", "--uvg", str(tmp_path), "--bunny", str(tmp_path / "bunny.mp4"))
    (command,) = plan["commands"]
    assert command[1].endswith("pfnr_benchmark.py")
    settings = {command[i]: command[i + 1] for i in range(2, len(command) - 1) if command[i].startswith("--")}
    assert settings["--clips"].split(",") == ["bunny", "Beauty", "Bosphorus", "HoneyBee", "Jockey", "ReadySteadyGo",
                                              "ShakeNDry", "YachtRide"]
    assert settings["--uvg"] == str(tmp_path) and settings["--bunny"] == str(tmp_path / "bunny.mp4")
    # one frame size for the whole set (bunny is 1280x720, UVG 1920x1080)
    assert (settings["--width"], settings["--height"]) == ("1280", "640")
    assert settings["--epochs"] == "150" and settings["--lr"] == "5e-3" and settings["--loss"] == "fusion6"
    assert "--fso" in command
