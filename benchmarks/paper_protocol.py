"""Each model's paper protocol, one command per model (for a GPU):
``.venv/bin/python benchmarks/paper_protocol.py --model hnerv [--uvg DIR] [--dry-run]``.

Bunny models (HNeRV, NeRV, NeRV++, HiNeRV) run ``benchmarks/bunny.py --tier gpu`` (all
132 frames, centre crop 1280x640, 1.5M parameters, 300 epochs, each model's published
recipe: see ``bunny.py``'s ``MODEL_OPTIONS``; NeRV and NeRV++ prune 40% then fine-tune
the authors' 100 epochs).  NIRVANA and PFNR run on UVG (official 1920x1080 8-bit raw
files under ``--uvg``, converted as ffmpeg does by default): NIRVANA encodes each of the
7 videos with the authors' lambda 0.001 and width-512 SIREN layers; PFNR learns UVG8
(bunny then the 7 UVG videos) as one set, the authors' recipe (150 epochs per session,
lr 5e-3, Fusion6; ihaeyong/PFNR run_fso.sh).  ``--dry-run`` prints the plan (commands and
the published figures they should reproduce, from ``../shared/reference/MODELS.md``)
without running anything.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
UVG_VIDEOS = ("Beauty", "Bosphorus", "HoneyBee", "Jockey", "ReadySteadyGo", "ShakeNDry", "YachtRide")
UVG_FILE = "{name}_1920x1080_120fps_420_8bit_YUV.yuv"
BUNNY_MODELS = ("hnerv", "nerv", "nervpp", "hinerv")
NIRVANA_SIREN_WIDTH = 512  # the authors' code
# What each protocol should reproduce (../shared/reference/MODELS.md).
PUBLISHED = {
    "hnerv": "bunny 1.5M, authors' released model: 0.109 bpp, 33.54 dB RGB PSNR (measured with their code); "
             "UVG mean of 7: 0.0139 bpp 32.77 dB, 0.0339 bpp 34.39 dB",
    "nerv": "UVG (NeRV CSV): 0.0135 bpp 31.28 dB ... 0.0475 bpp 34.71 dB ... 0.2497 bpp 37.86 dB; "
            "on bunny below HNeRV at equal size (HNeRV paper)",
    "nervpp": "above NeRV at equal size (NeRV++ paper); no bunny figure in MODELS.md",
    "hinerv": "72.3% bitrate saving over HNeRV on UVG (PSNR BD-rate)",
    "nirvana": "UVG: 37.70 dB where prior INR work reaches 37.36 dB at the same rate; 12x faster encoding",
    "pfnr": "UVG8 continual: every earlier video decodes unchanged after each session (no figure in MODELS.md)",
}


def plan(model: str, uvg: Path, bunny: Path | None = None) -> dict:
    """The commands (argv lists) of ``model``'s protocol and what they should reproduce."""
    if model in BUNNY_MODELS:
        command = [PYTHON, str(REPO / "benchmarks" / "bunny.py"), "--tier", "gpu", "--model", model, "--device", "cuda"]
        if bunny is not None:
            command += ["--input", str(bunny)]
        commands = [command]
        data = "bunny, 132 frames, centre crop 1280x640"
    elif model == "nirvana":
        from nnc.models.nirvana import scaled_config

        size = scaled_config(NIRVANA_SIREN_WIDTH).parameter_count()
        out = REPO / "benchmarks" / "bitstreams" / "paper_nirvana_uvg"
        commands = [[PYTHON, "-m", "nnc.cli.main", "encode", str(uvg / UVG_FILE.format(name=name)),
                     "--video-size", "1920x1080", "--pix-fmt", "yuv420p", "--fps", "120", "--model", "nirvana",
                     "--params", str(size), "--lambda", "0.001", "--device", "cuda",
                     "-o", str(out / f"{name}.nnc")] for name in UVG_VIDEOS]
        data = "UVG, 7 videos, 1920x1080 (600 frames; ShakeNDry 300)"
    elif model == "pfnr":
        # A set has one frame size, and bunny (1280x720) and UVG (1920x1080) differ: every
        # video is centre-cropped to 2:1 and area-resized to the bunny protocol's 1280x640
        # by the PFNR benchmark, which then learns them in order and measures the
        # continual-learning matrix.  `nnc encode` itself does not resize.
        commands = [[PYTHON, str(REPO / "benchmarks" / "pfnr_benchmark.py"), "--clips", ",".join(("bunny",) + UVG_VIDEOS),
                     "--uvg", str(uvg), "--width", "1280", "--height", "640", "--frames", "600",
                     "--size", "1.5e6", "--epochs", "150", "--lr", "5e-3", "--loss", "fusion6", "--fso",
                     "--device", "cuda", "--skip-baseline", "--tag", "paper_uvg8_1280x640"]]
        if bunny is not None:
            commands[0] += ["--bunny", str(bunny)]
        data = "UVG8: bunny then the 7 UVG videos, one session each, all at 1280x640 (centre crop to 2:1, area resize)"
    else:
        raise SystemExit(f"unknown model {model!r} (use {', '.join(BUNNY_MODELS + ('nirvana', 'pfnr'))})")
    return {"model": model, "data": data, "commands": commands, "published": PUBLISHED[model]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=BUNNY_MODELS + ("nirvana", "pfnr"))
    parser.add_argument("--uvg", type=Path, default=REPO.parent / "shared" / "media" / "uvg",
                        help="folder of the official UVG raw files (NIRVANA, PFNR)")
    parser.add_argument("--bunny", type=Path, help="the bunny clip (default: bunny.py's)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan as JSON, run nothing")
    args = parser.parse_args(argv)
    steps = plan(args.model, args.uvg, args.bunny)
    if args.dry_run:
        print(json.dumps(steps, indent=2))
        return
    print(f"{args.model}: {steps['data']}; should reproduce: {steps['published']}")
    if args.model == "nirvana":
        (REPO / "benchmarks" / "bitstreams" / "paper_nirvana_uvg").mkdir(parents=True, exist_ok=True)
    for command in steps["commands"]:
        print("+", shlex.join(command), flush=True)
        subprocess.run(command, check=True, cwd=REPO)


if __name__ == "__main__":
    main()
