"""The bunny benchmark (HNeRV's protocol), run as ``python -m nnc.eval.bunny``.

Big Buck Bunny, all 132 frames, centre crop 1280x640 (HNeRV's protocol), RGB by
ffmpeg's default conversion.  Tiers:

* ``gpu``: the full 640x1280 crop, 1.5M parameters, 300 epochs (the paper's setting);
* ``cpu``: the crop area-downscaled 2x to 320x640, 0.375M parameters, epochs as given.

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
from .metrics import compare

REPO = Path(__file__).resolve().parents[1]
BUNNY = REPO.parent / "shared" / "media" / "video" / "bunny_1280x720_25fps_132f.mp4"
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
    tag = f"bunny_{args.tier}_hnerv_{size / 1e6:g}M_e{epochs}"
    (args.out / "results").mkdir(parents=True, exist_ok=True)
    (args.out / "bitstreams").mkdir(parents=True, exist_ok=True)
    nnc_path = args.out / "bitstreams" / f"{tag}.nnc"

    options = EncodeOptions(size=size, epochs=epochs, batch_size=2, lr=1e-3, loss="l2", device=args.device,
                            show_progress=not args.quiet)
    report = encode_video(video, nnc_path, "hnerv", options)

    started = time.perf_counter()
    bitstream = read_bitstream_file(nnc_path)
    decoded = np.concatenate(list(decode_frames(bitstream, device="cpu")))
    decode_seconds = time.perf_counter() - started
    metrics = compare(video.frames, decoded, video.max_value)

    symbols = np.concatenate([t.symbols.ravel() for g in bitstream.groups for t in g.tensors])
    pixels = video.info.width * video.info.height * video.info.num_frames
    result = {
        "name": f"nnc-hnerv-{args.tier}",
        "description": f"nnc HNeRV on bunny ({args.tier} tier), file-size bpp",
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
            "settings": dict(report.settings, seed=options.seed),
            "model_size": report.stats.get("model_size"),
            "train_psnr_before_quantization": report.stats.get("train_psnr"),
            "train_seconds": report.stats.get("train_seconds"),
            "train_frames_per_second": report.stats.get("train_frames_per_second"),
            "decode_frames_per_second": video.info.num_frames / decode_seconds,
            "device": args.device,
            "machine": machine_description(),
            "nnc": __version__,
            "command": f"python -m nnc.eval.bunny --tier {args.tier} --epochs {epochs}"
            + (f" --size {size:g}" if args.size else ""),
        },
    }
    out_json = args.out / "results" / f"{tag}.json"
    out_json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["results"], indent=2))
    print(f"wrote {out_json} and {nnc_path}")


if __name__ == "__main__":
    main()
