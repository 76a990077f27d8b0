"""How close ``--bpp`` lands on real clips: ``.venv/bin/python benchmarks/rate_targets.py [--epochs 10]
[--rate-mode search]``.

Encodes each clip of CLIPS with HNeRV at its bpp targets (few epochs: the landing, not
the quality, is measured) and records the target, the bpp of the written file (every
byte over every pixel), how far below the target it landed, the weights' precision the
search chose (``--rate-mode search``; rate-trained, the default: the final lambda and the
step multiplier), the RGB PSNR and the time.
Writes ``benchmarks/results/rate_targets.json`` (``rate_targets_2.json``... when it
exists, unless ``--output`` names the file), CompressAI-style: ``name``, ``results`` (one
list per quantity, one entry per encode) and ``meta``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from nnc import __version__
from nnc.codec.base import machine_description
from nnc.codec.files import make_options
from nnc.codec.rate_target import DEFAULT_TARGET_LAMBDA
from nnc.codec.video_api import encode_video
from nnc.eval.output_paths import unused_stem
from nnc.media import read_video

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "media" / "video"
# (file, read_video options, bpp targets): targets above each clip's smallest HNeRV with the
# search (about 1.4, 0.7 and 0.21 bpp at 4-bit weights; `nnc encode --bpp --rate-mode search`
# says so when asked less; rate-trained networks reach lower).
CLIPS = [
    ("park_joy_160x90_10f.y4m", {}, [2.0, 3.0, 4.0]),
    ("park_joy_160x90_20f_10bit.y4m", {}, [1.0, 1.5, 2.0]),
    ("bus_352x288_17f_yuv420p.yuv", {"size": (352, 288), "pix_fmt": "yuv420p", "max_frames": 10}, [0.3, 0.5, 1.0]),
]
RESULTS = REPO / "benchmarks" / "results"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared 2-core machine, 2 threads ran 10x slower)")
    parser.add_argument("--model", default="hnerv")
    parser.add_argument("--rate-mode", choices=("train", "search"), default="train",
                        help="how the targets land (nnc encode --rate-mode; the committed rate_targets.json: search)")
    parser.add_argument("--lambda", dest="rate_lambda", type=float, help="rate-trained: lambda's start")
    parser.add_argument("--output", type=Path, help="Result file (default: a new rate_targets*.json in results/).")
    args = parser.parse_args(argv)
    if args.rate_mode == "search" and args.rate_lambda is not None:
        parser.error("--lambda is lambda's start in rate-trained landings: not with --rate-mode search")
    torch.set_num_threads(args.threads)
    missing = [name for name, _, _ in CLIPS if not (MEDIA / name).exists()]
    if missing:
        sys.exit(f"rate_targets: clips not found under {MEDIA}: {', '.join(missing)}")
    columns = {key: [] for key in ("clip", "frames", "target_bpp", "bpp", "landed_fraction", "file_bytes",
                                   "weight_bits", "step_multiplier", "final_lambda", "model_size", "psnr-rgb",
                                   "encoding_time")}
    with tempfile.TemporaryDirectory() as folder:
        for name, media, targets in CLIPS:
            video = read_video(MEDIA / name, **media)
            for target in targets:
                options = make_options(args.model, bpp=target, epochs=args.epochs, device="cpu", show_progress=False,
                                       checkpoint_interval=0, rate_mode=args.rate_mode, rate_lambda=args.rate_lambda)
                path = Path(folder) / f"{Path(name).stem}_{target}.nnc"
                started = time.perf_counter()
                report = encode_video(video, path, args.model, options)
                seconds = time.perf_counter() - started
                bpp = path.stat().st_size * 8 / (video.info.num_frames * video.info.width * video.info.height)
                row = dict(clip=name, frames=video.info.num_frames, target_bpp=target, bpp=bpp,
                           landed_fraction=bpp / target, file_bytes=path.stat().st_size,
                           weight_bits=report.settings["rate_target"].get("weight_bits"),
                           step_multiplier=report.settings["rate_target"].get("step_multiplier"),
                           final_lambda=(report.settings.get("rate_control") or {}).get("lambda_final"),
                           model_size=report.stats["model_size"], **{"psnr-rgb": report.psnr},
                           encoding_time=seconds)
                for key, value in row.items():
                    columns[key].append(value)
                print(json.dumps(row), flush=True)
    out = args.output or RESULTS / (unused_stem("rate_targets", lambda stem: [RESULTS / f"{stem}.json"]) + ".json")
    result = {
        "name": f"nnc-{args.model}-rate-targets",
        "description": f"nnc {args.model} --bpp targets vs the bpp of the written files",
        "results": columns,
        "meta": {
            "clips": {name: media for name, media, _ in CLIPS},
            "bpp": "file bytes x 8 over frames x width x height (every byte of the file)",
            "landed_fraction": "file bpp / target bpp: at most 1 by construction, the goal is at least 0.9",
            "settings": {"model": args.model, "epochs": args.epochs, "device": "cpu", "torch_threads": args.threads,
                         "rate_mode": args.rate_mode, "rate_lambda_start": None if args.rate_mode == "search" else
                         (args.rate_lambda if args.rate_lambda is not None else DEFAULT_TARGET_LAMBDA),
                         "other": "codec defaults"},
            "machine": machine_description(),
            "machine_idle": False,  # the 2-core machine was shared with other work while this ran
            "nnc": __version__,
            "command": f"nice -n 10 .venv/bin/python benchmarks/rate_targets.py --model {args.model} --epochs {args.epochs} "
                       f"--threads {args.threads} --rate-mode {args.rate_mode}"
                       + ("" if args.rate_lambda is None else f" --lambda {args.rate_lambda:g}"),
        },
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
