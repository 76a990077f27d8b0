"""NIRVANA before and after independent patches and adaptive steps, on one clip:
``.venv/bin/python benchmarks/nirvana_patches.py [--input CLIP] [--epochs 150]``.

Encodes the clip twice at equal settings: the earlier design (upsampler over the
assembled frame, every group trained its full steps: ``--no-independent-patches
--no-adaptive-steps``) and the current default (each patch upsampled on its own, warm-
started groups stopping at the first group's PSNR).  Writes RGB PSNR, file bytes, bpp,
steps and encode time of both to ``benchmarks/results/nirvana_patches_<clip>.json``
(``_2``... if it exists, unless ``--output`` names the file).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from nnc import __version__
from nnc.codec.base import machine_description
from nnc.codec.files import decode_to_frames
from nnc.codec.nirvana import NIRVANAOptions
from nnc.codec.video_api import encode_video
from nnc.eval.output_paths import unused_stem
from nnc.media import read_video
from nnc.metrics import compare

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO.parent / "shared" / "media" / "video" / "park_joy_160x90_10f.y4m"
VARIANTS = {
    "assembled_fixed_steps": dict(independent_patches=False, adaptive_steps=False),
    "independent_patches_fixed_steps": dict(independent_patches=True, adaptive_steps=False),
    "independent_patches_adaptive_steps": dict(independent_patches=True, adaptive_steps=True),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=CLIP)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    video = read_video(args.input)
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, changes in VARIANTS.items():
            path = Path(folder) / f"{name}.nnc"
            options = NIRVANAOptions(epochs=args.epochs, device="cpu", show_progress=False, checkpoint_interval=0,
                                     **changes)
            started = time.perf_counter()
            report = encode_video(video, path, "nirvana", options)
            seconds = time.perf_counter() - started
            metrics = compare(video.frames, decode_to_frames(path, device="cpu").frames, video.max_value)
            rows[name] = {"psnr-rgb": metrics["psnr-rgb"], "file_bytes": report.file_bytes, "bpp": report.bpp,
                          "iterations": report.stats["iterations"], "group_iterations": report.stats["group_iterations"],
                          "encode_seconds": seconds, "settings": changes}
            print(name, json.dumps(rows[name]))
    stem = f"nirvana_patches_{args.input.stem}"
    out = args.output or REPO / "benchmarks" / "results" / (
        unused_stem(stem, lambda t: [REPO / "benchmarks" / "results" / f"{t}.json"]) + ".json")
    result = {"clip": args.input.name, "epochs": args.epochs, "results": rows, "machine": machine_description(),
              "nnc": __version__, "command": f"python benchmarks/nirvana_patches.py --epochs {args.epochs}"}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
