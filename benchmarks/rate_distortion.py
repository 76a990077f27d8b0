"""Rate-distortion training (``--lambda``) against the published recipe, on one clip:
``.venv/bin/python benchmarks/rate_distortion.py [--input CLIP | --bunny-frames N] [--model hnerv]
[--epochs 300] [--sizes 60k 90k 120k 180k] [--rd-size 180k] [--lambdas 3e-4 1e-3 3e-3]``.

``--bunny-frames N`` takes the first N frames of the bunny CPU tier (320x640) and
area-downscales it 2x more (``--bunny-scale 2``, 160x320; 1 keeps 320x640): content of
the bunny benchmark at a size whose curve fits in a CPU session.

The published recipe reaches lower rates with smaller networks (``--sizes``: fixed-bit
quantization after training); rate-distortion training keeps one network
(``--rd-size``) and lets ``--lambda`` choose the rate.  Every point is trained for the
same epochs.  For each point: RGB PSNR of the decoded file, bpp from the file size,
the entropy-coded payload (rANS streams) beside what training estimated, and encode
time; then BD-rate and BD-PSNR of the rate-trained curve against the recipe's.
Writes ``benchmarks/results/rate_distortion_<model>_<clip>.json`` (``_2``... if it
exists, unless ``--output`` names the file).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from nnc import __version__
from nnc.bitstream import inspect_bitstream
from nnc.codec.base import machine_description
from nnc.codec.files import decode_to_frames, make_options
from nnc.codec.video_api import encode_video
from nnc.eval.bdrate import bd_psnr, bd_rate
from nnc.eval.output_paths import unused_stem
from nnc.media import read_video
from nnc.metrics import compare
from nnc.units import parse_count

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO.parent / "shared" / "media" / "video" / "park_joy_160x90_10f.y4m"


def encode_point(video, folder: Path, model: str, name: str, epochs: int, size: float, rate_lambda, seed: int) -> dict:
    path = folder / f"{name}.nnc"
    options = make_options(model, size=size, epochs=epochs, device="cpu", show_progress=False,
                           checkpoint_interval=0, force=True, rate_lambda=rate_lambda, seed=seed)
    started = time.perf_counter()
    report = encode_video(video, path, model, options)
    seconds = time.perf_counter() - started
    metrics = compare(video.frames, decode_to_frames(path, device="cpu").frames, video.max_value)
    layout = inspect_bitstream(path.read_bytes())
    payload_bits = 8 * sum(group["payload_bytes"] for group in layout["groups"])  # the rANS streams as written
    row = {"size": size, "lambda": rate_lambda, "bpp": report.bpp, "psnr-rgb": metrics["psnr-rgb"],
           "file_bytes": report.file_bytes, "payload_bits": payload_bits,
           "estimated_payload_bits": report.stats.get("rate_estimated_payload_bits"),
           "encode_seconds": seconds, "train_seconds": report.stats.get("train_seconds")}
    print(name, json.dumps(row), flush=True)
    return row, path


def curve(rows):
    return {"bpp": [r["bpp"] for r in rows], "psnr-rgb": [r["psnr-rgb"] for r in rows]}


def comparison(recipe, trained) -> dict:
    """BD-rate/BD-PSNR of the rate-trained curve against the recipe's (needs 2+ points each).
    Each is computed on its own: BD-rate needs the curves to share a PSNR range, BD-PSNR a
    rate range, and one may exist without the other (then its entry says why)."""
    if len(recipe) < 2 or len(trained) < 2:
        return {"error": "fewer than two points on a curve"}
    result = {}
    for key, function in (("bd_rate_percent", bd_rate), ("bd_psnr_db", bd_psnr)):
        try:
            result[key] = function(curve(recipe)["bpp"], curve(recipe)["psnr-rgb"],
                                   curve(trained)["bpp"], curve(trained)["psnr-rgb"])
        except Exception as error:  # curves that do not overlap: say why instead
            result[key] = None
            result[f"{key}_error"] = str(error)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=CLIP)
    parser.add_argument("--model", default="hnerv")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--bunny-frames", type=int)
    parser.add_argument("--bunny-scale", type=int, default=2, choices=(1, 2))
    parser.add_argument("--sizes", nargs="+", default=["60k", "90k", "120k", "180k"])
    parser.add_argument("--rd-size", default="180k")
    parser.add_argument("--lambdas", nargs="+", type=float, default=[3e-4, 1e-3, 3e-3])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--machine-idle", action="store_true", help="Say in the JSON that nothing else ran.")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    if args.bunny_frames:
        from nnc.eval.datasets import BUNNY, area_downscale_2x, load_bunny
        from nnc.media import Video

        if not BUNNY.exists():
            sys.exit(f"no bunny clip at {BUNNY} (the shared media folder is absent)")
        video = load_bunny("cpu", max_frames=args.bunny_frames)
        if args.bunny_scale == 2:
            frames = area_downscale_2x(video.frames)
            video = Video(frames, replace(video.info, height=frames.shape[1], width=frames.shape[2]))
        name = f"bunny_{video.info.width}x{video.info.height}_{args.bunny_frames}f"
    else:
        if not args.input.exists():
            sys.exit(f"no clip at {args.input} (the shared media folder is absent): pass --input")
        video = read_video(args.input)
        name = args.input.stem
    stem = f"rate_distortion_{args.model}_{name}"
    results_dir = REPO / "benchmarks" / "results"
    out = args.output or results_dir / (unused_stem(stem, lambda t: [results_dir / f"{t}.json"]) + ".json")
    bitstreams = REPO / "benchmarks" / "bitstreams" / out.stem  # the files behind every point, beside the JSON
    recipe, trained = [], []
    meta = {"dataset": name, "frames": int(video.frames.shape[0]), "epochs": args.epochs, "model": args.model,
            "rd_size": args.rd_size, "device": "cpu", "machine": machine_description(),
            "machine_idle": bool(args.machine_idle), "nnc": __version__, "threads": os.environ.get("OMP_NUM_THREADS"),
            "command": "python benchmarks/rate_distortion.py " + " ".join(argv if argv is not None else sys.argv[1:])}

    def write() -> None:  # after every point: an interrupted run keeps what it measured
        result = {"name": f"nnc {args.model}: rate-distortion training vs published recipe",
                  "results": {"recipe": curve(recipe), "rate_trained": curve(trained)},
                  "points": {"recipe": recipe, "rate_trained": trained},
                  "rate_trained_vs_recipe": comparison(recipe, trained), "meta": meta}
        out.write_text(json.dumps(result, indent=2) + "\n")

    keep = args.output is None
    if keep:
        bitstreams.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        recipe_points = [("recipe", f"recipe_{size}", parse_count(size), None) for size in args.sizes]
        trained_points = [("trained", f"lambda_{value:g}", parse_count(args.rd_size), value) for value in args.lambdas]
        # alternate the two curves, so that a run cut short still has points of both
        points = [p for pair in zip(recipe_points, trained_points) for p in pair]
        points += recipe_points[len(trained_points):] + trained_points[len(recipe_points):]
        for kind, label, size, rate_lambda in points:
            row, path = encode_point(video, Path(folder), args.model, label, args.epochs, size, rate_lambda, args.seed)
            (recipe if kind == "recipe" else trained).append(row)
            if keep:
                shutil.copyfile(path, bitstreams / path.name)
            write()
    print(json.dumps(comparison(recipe, trained)))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
