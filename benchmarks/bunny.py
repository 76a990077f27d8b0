"""The bunny benchmark (HNeRV's protocol): ``.venv/bin/python benchmarks/bunny.py --tier cpu``.

Big Buck Bunny, all 132 frames, centre crop 1280x640 (HNeRV's protocol), RGB by
ffmpeg's default conversion.  Tiers:

* ``gpu``: the full 640x1280 crop, 1.5M parameters, 300 epochs (the paper's setting);
* ``cpu``: the crop area-downscaled 2x to 320x640, 0.375M parameters, epochs as given.

``--bpp`` sets a rate target (rate-trained, as ``nnc encode --bpp``; the model size is then
the one it chooses unless ``--size`` is given).  ``--model`` picks the codec: ``hnerv`` (default), ``nerv``, ``nervpp`` (their recipe:
Fusion6, pruning 0.4 + fine-tuning, 8-bit; ``--size`` as for HNeRV) or ``nirvana``
(``--size`` is ONE group's network, ``--epochs`` the steps per group, ``--lambda`` the
rate weight, ``--workers`` parallel chains) or ``hinerv`` (the authors' recipe: train,
prune 0.15 + fine-tune, quantization-aware epochs; ``--size`` counts decoder + grids).  The output names carry the model; an
existing result is never overwritten (the run gets ``_2``, ``_3``... appended) unless
``--output`` names the results JSON.

Writes a results JSON in CompressAI's format (plus ``meta``: settings, machine, encode
and decode time, frames/s) and keeps the ``.nnc`` it produced.  Also reports, for the
same quantized symbols, the bpp that the authors' code would print (one Huffman
codebook over all symbols, side information left out), so "file-size bpp no larger
than their estimate" can be checked directly.
"""

from __future__ import annotations

import argparse
import heapq
import json
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from nnc import __version__
from nnc.bitstream import read_bitstream_file
from nnc.codec.base import machine_description
from nnc.codec.files import decode_to_frames, make_options
from nnc.codec.video_api import encode_video
from nnc.eval.datasets import BUNNY, load_bunny
from nnc.eval.output_paths import unused_stem
from nnc.eval.planes import reference_planes
from nnc.eval.report import machine_load
from nnc.metrics import compare

REPO = Path(__file__).resolve().parents[1]
MODELS = ("hnerv", "nerv", "nervpp", "nirvana", "hinerv")
# Per-model training settings of the benchmark (the codecs' own defaults otherwise).
MODEL_OPTIONS = {
    "hnerv": dict(batch_size=2, lr=1e-3, loss="l2"),
    "nerv": dict(batch_size=1, lr=5e-4, loss="fusion6"),
    "nervpp": dict(batch_size=1, lr=5e-4, loss="fusion6"),
    "nirvana": dict(lr=1e-3),
    # the authors' recipe; patches: the codec's default (whole frames on CPU, 80x80 on CUDA)
    "hinerv": dict(batch_size=1, lr=2e-3, loss="fusion6"),
}
TIERS = {
    "gpu": dict(height=640, width=1280, size=1.5e6, epochs=300),
    "cpu": dict(height=320, width=640, size=0.375e6, epochs=300),
}


def huffman_estimate_bits(symbols: np.ndarray) -> int:
    """Bits of one Huffman code over ``symbols`` (HNeRV's estimate, no table counted)."""
    counts = Counter(symbols.tolist())
    if len(counts) == 1:
        return len(symbols)
    heap = [(count, index, 0) for index, count in enumerate(counts.values())]
    heapq.heapify(heap)
    total, next_index = 0, len(heap)
    while len(heap) > 1:  # each merge adds one bit to every symbol under it
        first, second = heapq.heappop(heap), heapq.heappop(heap)
        merged = first[0] + second[0]
        total += merged
        heapq.heappush(heap, (merged, next_index, 0))
        next_index += 1
    return total


def measured_report(path: Path, video, encode_seconds: float | None) -> SimpleNamespace:
    """What an encode reports, read back from its file (no training stats)."""
    header = read_bitstream_file(path).header
    file_bytes = path.stat().st_size
    pixels = video.info.width * video.info.height * video.info.num_frames
    settings = dict((header.get("encoder") or {}).get("settings") or {}, measured_from_file=True)
    return SimpleNamespace(bpp=file_bytes * 8 / pixels, file_bytes=file_bytes, encode_seconds=encode_seconds,
                           settings=settings, stats={})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tier", choices=sorted(TIERS), default="cpu")
    parser.add_argument("--model", choices=MODELS, default="hnerv")
    parser.add_argument("--lambda", dest="rate_lambda", type=float, help="NIRVANA: rate weight (default: the codec's)")
    parser.add_argument("--workers", type=int, help="NIRVANA: parallel chains of groups (default 1)")
    parser.add_argument("--prune", type=float, help="NeRV/NeRV++/HiNeRV: fraction of weights removed (default 0.4; HiNeRV 0.15)")
    parser.add_argument("--loss", choices=("l2", "fusion6"), help="training loss (default: the model's, see MODEL_OPTIONS)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the model's, see MODEL_OPTIONS)")
    parser.add_argument("--epochs", type=int, help="default: the tier's (300)")
    parser.add_argument("--size", type=float, help="model size in parameters (default: the tier's; with --bpp: "
                                                   "the one --bpp chooses)")
    parser.add_argument("--bpp", type=float, help="HNeRV/NeRV/NeRV++/HiNeRV: a rate target (nnc encode --bpp: "
                                                  "rate-trained, --lambda its start)")
    parser.add_argument("--time-budget", help="training time budget (90s, 20m, 2h): plans every phase's epochs "
                                               "to fit it (replaces --epochs)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, one per core)")
    parser.add_argument("--dry-run", action="store_true", help="calibrate, print the plan and exit")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--input", type=Path, default=BUNNY)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks",
                        help="folder with results/ and bitstreams/ (default: the repository's benchmarks/)")
    parser.add_argument("--output", type=Path, default=None,
                        help="results JSON to write (overwritten if it exists); the .nnc goes to OUT/bitstreams/ "
                             "under the same name. Default: a new name, never an existing result")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--measure", type=Path, metavar="FILE.nnc",
                        help="measure this existing .nnc of the same settings instead of encoding (an encode whose "
                             "results JSON was not written); its training stats are then unknown")
    parser.add_argument("--encode-seconds", type=float, help="with --measure: the encode's wall time, if known")
    parser.add_argument("--note", help="a note kept in the results' meta (e.g. what else ran on the machine)")
    args = parser.parse_args(argv)
    if not args.input.exists():
        raise SystemExit(f"bunny clip not found at {args.input} (it lives in ../shared/media/video)")

    if args.threads:
        torch.set_num_threads(args.threads)
    tier = TIERS[args.tier]
    epochs = args.epochs or tier["epochs"]
    if args.bpp is not None and args.model == "nirvana":
        raise SystemExit("--bpp does not apply to --model nirvana (its --lambda sets the rate)")
    size = args.size or (None if args.bpp is not None else tier["size"])
    video = load_bunny(args.tier, args.input)
    size_tag = "_".join(([] if size is None else [f"{size / 1e6:g}M"])
                        + ([] if args.bpp is None else [f"bpp{args.bpp:g}"]))
    tag = f"bunny_{args.tier}_{args.model}_{size_tag}_e{epochs}"
    if args.time_budget:
        tag = f"bunny_{args.tier}_{args.model}_{size_tag}_t{args.time_budget}"
    if args.rate_lambda is not None:
        tag += f"_l{args.rate_lambda:g}"
    if args.lr is not None:
        tag += f"_lr{args.lr:g}"
    if args.loss is not None and args.loss != MODEL_OPTIONS[args.model].get("loss"):
        tag += f"_{args.loss}"
    if args.output is not None:
        out_json, tag = args.output, args.output.stem
    else:
        tag = unused_stem(tag, lambda t: [args.out / "results" / f"{t}.json", args.out / "bitstreams" / f"{t}.nnc"])
        out_json = args.out / "results" / f"{tag}.json"
    out_json.parent.mkdir(parents=True, exist_ok=True)
    (args.out / "bitstreams").mkdir(parents=True, exist_ok=True)
    nnc_path = args.out / "bitstreams" / f"{tag}.nnc"

    options = make_options(args.model, size=size, epochs=epochs, device=args.device, show_progress=not args.quiet,
                           rate_lambda=args.rate_lambda, workers=args.workers, prune=args.prune,
                           **({"bpp": args.bpp} if args.bpp is not None else {}),
                           **({"time_budget": args.time_budget} if args.time_budget else {}),
                           **({"dry_run": True} if args.dry_run else {}),
                           **dict(MODEL_OPTIONS[args.model], **({"lr": args.lr} if args.lr else {}),
                                  **({"loss": args.loss} if args.loss else {})))
    load_at_start = machine_load()
    if args.measure is not None:
        report = measured_report(args.measure, video, args.encode_seconds)
        nnc_path = args.measure
    else:
        report = encode_video(video, nnc_path, args.model, options)
    if args.dry_run:
        print(json.dumps(report.plan, indent=2, default=str))
        return

    started = time.perf_counter()
    bitstream = read_bitstream_file(nnc_path)
    decoded = decode_to_frames(nnc_path, device="cpu").frames
    decode_seconds = time.perf_counter() - started
    metrics = compare(video.frames, decoded, video.max_value)
    # the tier exists only as RGB: its YUV planes are made from it, as nnc report does
    metrics.update(reference_planes(video).measure(decoded, video.info))

    symbols = np.concatenate([t.symbols.ravel() for g in bitstream.groups for t in g.tensors])
    pixels = video.info.width * video.info.height * video.info.num_frames
    load_at_end = machine_load()
    result = {
        "name": f"nnc-{args.model}-{args.tier}",
        "description": f"nnc {args.model} on bunny ({args.tier} tier), file-size bpp",
        "results": {
            "bpp": [report.bpp],
            "psnr-rgb": [metrics["psnr-rgb"]],
            "psnr-y": [metrics.get("psnr-y")],
            "psnr-yuv": [metrics.get("psnr-yuv")],
            "ms-ssim-rgb": [metrics["ms-ssim-rgb"]],
            "encoding_time": [report.encode_seconds],
            "decoding_time": [decode_seconds],
        },
        "meta": {
            "dataset": "bunny_1280x720_25fps_132f.mp4, centre crop 1280x640"
            + (", area-downscaled to 640x320" if args.tier == "cpu" else ""),
            "frames": video.info.num_frames,
            "resolution": f"{video.info.width}x{video.info.height}",
            "colour": f"{video.info.color_matrix} {video.info.color_range} -> RGB (ffmpeg default)",
            "psnr": "per-frame RGB MSE on 8-bit output, averaged over frames",
            "bitstream": str(nnc_path.relative_to(REPO)) if nnc_path.is_relative_to(REPO) else str(nnc_path),
            "file_bytes": report.file_bytes,
            "hnerv_style_estimate_bpp": huffman_estimate_bits(symbols) / pixels,
            "model": args.model,
            "settings": dict(report.settings, seed=options.seed),
            "model_size": report.stats.get("model_size"),
            "model_size_note": "NIRVANA: parameters of all group networks (one group's network x groups)"
            if args.model == "nirvana" else "decoder parameters (+ embeddings for HNeRV, + grids for HiNeRV)",
            "encode_seconds": report.encode_seconds,
            "train_psnr_before_quantization": report.stats.get("train_psnr"),
            "train_seconds": report.stats.get("train_seconds"),
            "train_frames_per_second": report.stats.get("train_frames_per_second"),
            "decode_frames_per_second": video.info.num_frames / decode_seconds,
            "codec_stats": {k: report.stats[k] for k in ("estimated_bpp", "groups", "chains", "group_parameters",
                                                         "kept_parameters", "pruned_fraction", "grid_parameters",
                                                         "training_patch") if k in report.stats},
            "device": args.device,
            "machine": machine_description(),
            # timings are a benchmark only on an idle machine: the load when the run started and ended
            "machine_load": {"at_start": load_at_start, "at_end": load_at_end},
            "machine_idle": bool(load_at_start.get("idle")) and bool(load_at_end.get("idle")),
            **({"note": args.note} if args.note else {}),
            "nnc": __version__,
            "command": f"python benchmarks/bunny.py --tier {args.tier} --model {args.model} --epochs {epochs}"
            + (f" --size {size:g}" if args.size else "")
            + (f" --bpp {args.bpp:g}" if args.bpp is not None else "")
            + (f" --time-budget {args.time_budget}" if args.time_budget else "")
            + (f" --threads {args.threads}" if args.threads else "")
            + (f" --lambda {args.rate_lambda:g}" if args.rate_lambda is not None else "")
            + (f" --workers {args.workers}" if args.workers else "")
            + (f" --prune {args.prune:g}" if args.prune is not None else "")
            + (f" --lr {args.lr:g}" if args.lr else "")
            + (f" --loss {args.loss}" if args.loss else "")
            + (f" --measure {args.measure}" if args.measure else ""),
        },
    }
    out_json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["results"], indent=2))
    print(f"wrote {out_json} and {nnc_path}")


if __name__ == "__main__":
    main()
