"""The bunny benchmark (HNeRV's protocol), run as ``python -m nnc.eval.bunny``.

Big Buck Bunny, all 132 frames, centre crop 1280x640 (HNeRV's protocol), RGB by
ffmpeg's default conversion.  Tiers:

* ``gpu``: the full 640x1280 crop, 1.5M parameters, 300 epochs (the paper's setting);
* ``cpu``: the crop area-downscaled 2x to 320x640, 0.375M parameters, epochs as given.

``--model`` picks the codec: ``hnerv`` (default), ``nerv``, ``nervpp`` (their recipe:
Fusion6, pruning 0.4 + fine-tuning, 8-bit; ``--size`` as for HNeRV) or ``nirvana``
(``--size`` is ONE group's network, ``--epochs`` the steps per group, ``--lambda`` the
rate weight, ``--workers`` parallel chains).  The output names carry the model.

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
from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import __version__
from ..bitstream import read_bitstream_file
from ..codec.api import decode_frames, encode_video, machine_description
from ..codec.base import EncodeOptions
from ..media import Video, read_video
from ..metrics import compare

REPO = Path(__file__).resolve().parents[1]
BUNNY = REPO.parent / "shared" / "media" / "video" / "bunny_1280x720_25fps_132f.mp4"
MODELS = ("hnerv", "nerv", "nervpp", "nirvana")
# Per-model training settings of the benchmark (the codecs' own defaults otherwise).
MODEL_OPTIONS = {
    "hnerv": dict(batch_size=2, lr=1e-3, loss="l2"),
    "nerv": dict(batch_size=1, lr=5e-4, loss="fusion6"),
    "nervpp": dict(batch_size=1, lr=5e-4, loss="fusion6"),
    "nirvana": dict(lr=1e-3),
}
TIERS = {
    "gpu": dict(height=640, width=1280, size=1.5e6, epochs=300),
    "cpu": dict(height=320, width=640, size=0.375e6, epochs=300),
}


def centre_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    top, left = (frames.shape[1] - height) // 2, (frames.shape[2] - width) // 2
    return frames[:, top : top + height, left : left + width]


def area_downscale_2x(frames: np.ndarray) -> np.ndarray:
    """Exact 2x area (box) downscale with round-half-up, in integers."""
    t, h, w, c = frames.shape
    blocks = frames.reshape(t, h // 2, 2, w // 2, 2, c).astype(np.uint32).sum(axis=(2, 4))
    return ((blocks + 2) // 4).astype(frames.dtype)


def load_bunny(tier: str, path: Path = BUNNY) -> Video:
    video = read_video(path)
    frames = centre_crop(video.frames, 640, 1280)
    if tier == "cpu":
        frames = area_downscale_2x(frames)
    frames = np.ascontiguousarray(frames)
    info = replace(video.info, width=frames.shape[2], height=frames.shape[1], num_frames=frames.shape[0])
    return Video(frames=frames, info=info)


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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tier", choices=sorted(TIERS), default="cpu")
    parser.add_argument("--model", choices=MODELS, default="hnerv")
    parser.add_argument("--lambda", dest="rate_lambda", type=float, help="NIRVANA: rate weight (default: the codec's)")
    parser.add_argument("--workers", type=int, help="NIRVANA: parallel chains of groups (default 1)")
    parser.add_argument("--prune", type=float, help="NeRV/NeRV++: fraction of weights removed (default 0.4)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the model's, see MODEL_OPTIONS)")
    parser.add_argument("--epochs", type=int, help="default: the tier's (300)")
    parser.add_argument("--size", type=float, help="model size in parameters (default: the tier's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--input", type=Path, default=BUNNY)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if not args.input.exists():
        raise SystemExit(f"bunny clip not found at {args.input} (it lives in ../shared/media/video)")

    tier = TIERS[args.tier]
    epochs = args.epochs or tier["epochs"]
    size = args.size or tier["size"]
    video = load_bunny(args.tier, args.input)
    tag = f"bunny_{args.tier}_{args.model}_{size / 1e6:g}M_e{epochs}"
    if args.rate_lambda is not None:
        tag += f"_l{args.rate_lambda:g}"
    if args.lr is not None:
        tag += f"_lr{args.lr:g}"
    (args.out / "results").mkdir(parents=True, exist_ok=True)
    (args.out / "bitstreams").mkdir(parents=True, exist_ok=True)
    nnc_path = args.out / "bitstreams" / f"{tag}.nnc"

    options = EncodeOptions(size=size, epochs=epochs, device=args.device, show_progress=not args.quiet,
                            rate_lambda=args.rate_lambda, workers=args.workers, prune=args.prune,
                            **dict(MODEL_OPTIONS[args.model], **({"lr": args.lr} if args.lr else {})))
    report = encode_video(video, nnc_path, args.model, options)

    started = time.perf_counter()
    bitstream = read_bitstream_file(nnc_path)
    decoded = np.concatenate(list(decode_frames(bitstream, device="cpu")))
    decode_seconds = time.perf_counter() - started
    metrics = compare(video.frames, decoded, video.max_value)

    symbols = np.concatenate([t.symbols.ravel() for g in bitstream.groups for t in g.tensors])
    pixels = video.info.width * video.info.height * video.info.num_frames
    result = {
        "name": f"nnc-{args.model}-{args.tier}",
        "description": f"nnc {args.model} on bunny ({args.tier} tier), file-size bpp",
        "results": {
            "bpp": [report.bpp],
            "psnr-rgb": [metrics["psnr-rgb"]],
            "psnr-yuv": [metrics["psnr-yuv"]],
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
            if args.model == "nirvana" else "decoder parameters (+ embeddings for HNeRV)",
            "encode_seconds": report.encode_seconds,
            "train_psnr_before_quantization": report.stats.get("train_psnr"),
            "train_seconds": report.stats.get("train_seconds"),
            "train_frames_per_second": report.stats.get("train_frames_per_second"),
            "decode_frames_per_second": video.info.num_frames / decode_seconds,
            "codec_stats": {k: report.stats[k] for k in ("estimated_bpp", "groups", "chains", "group_parameters",
                                                         "kept_parameters", "pruned_fraction") if k in report.stats},
            "device": args.device,
            "machine": machine_description(),
            "nnc": __version__,
            "command": f"python -m nnc.eval.bunny --tier {args.tier} --model {args.model} --epochs {epochs}"
            + (f" --size {size:g}" if args.size else "")
            + (f" --lambda {args.rate_lambda:g}" if args.rate_lambda is not None else "")
            + (f" --workers {args.workers}" if args.workers else "")
            + (f" --prune {args.prune:g}" if args.prune is not None else "")
            + (f" --lr {args.lr:g}" if args.lr else ""),
        },
    }
    out_json = args.out / "results" / f"{tag}.json"
    out_json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["results"], indent=2))
    print(f"wrote {out_json} and {nnc_path}")


if __name__ == "__main__":
    main()
