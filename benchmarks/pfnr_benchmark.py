"""PFNR continual-learning benchmark: ``.venv/bin/python benchmarks/pfnr_benchmark.py``.

Real clips from ``../shared/media/video`` (bunny, bus, park_joy, foreman), each
centre-cropped to a common aspect ratio and area-resized (Pillow's BOX filter) to a
common small size, are learned in that order into one PFNR set: one session each,
through ``encode_video_set`` and then ``append_to_set`` (the file really grows).
After every session every video so far is decoded from the file and measured: the
continual-learning matrix (row = after session s, column = video v).  Decoded frames
are hashed too, so the JSON says whether recall was bit-exact.

Baseline: one HNeRV per video, the parameter budgets set so that the HNeRV files
together are about as large as the final PFNR file (budgets proportional to frame
counts; the bits per parameter are calibrated on the first HNeRV encode).

Writes ``benchmarks/results/pfnr_<tag>.json`` (CompressAI's ``name``/``results`` plus
``meta``) and ``benchmarks/results/pfnr_<tag>_hnerv_baseline.json``; when those exist, a new tag
(``<tag>_2``...) rather than overwriting them, unless ``--output`` names the JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nnc import __version__
from nnc.bitstream import inspect_bitstream, read_bitstream_file
from nnc.codec.base import float_to_frames, machine_description
from nnc.codec.files import decode_to_frames, make_options
from nnc.codec.video_api import encode_video
from nnc.codec.pfnr import decode_session, parse_set_header, replay
from nnc.codec.video_set_api import append_to_set, describe_set, encode_video_set
from nnc.eval.output_paths import unused_stem
from nnc.media import Video, read_video
from nnc.metrics import mean_psnr, psnr_per_frame

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "media" / "video"
CLIPS = {  # name: (file, read_video keyword arguments)
    "bunny": ("bunny_1280x720_25fps_132f.mp4", {}),
    "bus": ("bus_352x288_17f_yuv420p.yuv", {"size": (352, 288), "pix_fmt": "yuv420p"}),
    "park_joy": ("park_joy_160x90_10f.y4m", {}),
    "foreman": ("foreman_352x288_300f_intra.h264", {}),
}


def crop_and_resize(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre crop to height:width's aspect ratio, then area (box) resize to height x width."""
    source_h, source_w = frames.shape[1:3]
    if source_w * height > width * source_h:  # too wide: crop columns
        crop_h, crop_w = source_h, round(source_h * width / height)
    else:
        crop_h, crop_w = round(source_w * height / width), source_w
    top, left = (source_h - crop_h) // 2, (source_w - crop_w) // 2
    out = np.empty((frames.shape[0], height, width, 3), np.uint8)
    for index, frame in enumerate(frames):
        image = Image.fromarray(frame[top : top + crop_h, left : left + crop_w])
        out[index] = np.asarray(image.resize((width, height), Image.Resampling.BOX))
    return out


# The 7 UVG videos (official raw files), usable as clips with --uvg DIR (PFNR's UVG8
# protocol: bunny then these, all brought to one frame size since a set has one).
UVG_VIDEOS = ("Beauty", "Bosphorus", "HoneyBee", "Jockey", "ReadySteadyGo", "ShakeNDry", "YachtRide")
UVG_FILE = "{name}_1920x1080_120fps_420_8bit_YUV.yuv"


def clip_source(name: str, uvg: Path | None) -> tuple[Path, dict]:
    """The file of clip ``name`` and its read_video options."""
    if name in UVG_VIDEOS and uvg is not None:
        return uvg / UVG_FILE.format(name=name), {"size": (1920, 1080), "pix_fmt": "yuv420p"}
    filename, kwargs = CLIPS[name]
    return MEDIA / filename, kwargs


def load_clip(name: str, height: int, width: int, frames: int, uvg: Path | None = None) -> Video:
    path, kwargs = clip_source(name, uvg)
    video = read_video(path, max_frames=frames, **kwargs)
    if video.info.bit_depth != 8:
        raise SystemExit(f"{path.name}: the benchmark expects 8-bit clips")
    resized = crop_and_resize(video.frames, height, width)
    info = replace(video.info, width=width, height=height, num_frames=resized.shape[0])
    return Video(frames=resized, info=info)


def decode_set_member(path: Path, index: int) -> np.ndarray:
    bitstream = read_bitstream_file(path)
    config, infos = parse_set_header(bitstream.header["model"])
    state = replay(config, bitstream.groups[: index + 1])
    info = infos[index]
    return np.concatenate([float_to_frames(b, 255) for b in
                           decode_session(state, index, info.num_frames, info.height, info.width)])


def smallest_hnerv(video: Video) -> float:
    from nnc.models.hnerv import HNeRVConfig, choose_strides, model_size

    strides, embed_h, embed_w = choose_strides(video.info.height, video.info.width)
    return float(model_size(HNeRVConfig(strides=strides, embed_height=embed_h, embed_width=embed_w, fc_dim=1),
                            video.info.num_frames))


def hnerv_baseline(names, videos, pixels, file_bytes, args, workdir: Path) -> dict:
    """One HNeRV per clip; the bytes left are shared among the clips still to encode in
    proportion to their pixels (never below the smallest HNeRV), and the bits per
    parameter are recalibrated after every encode."""
    bits_per_parameter = 7.0  # first guess
    entries, spent = [], 0
    for index, (name, video) in enumerate(zip(names, videos)):
        share = (file_bytes - spent) * pixels[index] / sum(pixels[index:])
        floor = smallest_hnerv(video) * 1.02
        size = max(share * 8 / bits_per_parameter, floor)
        path = workdir / f"hnerv_{name}.nnc"
        options = make_options("hnerv", size=size, epochs=args.epochs, batch_size=args.baseline_batch_size,
                               device=args.device, show_progress=not args.quiet, checkpoint_interval=0)
        report = encode_video(video, path, "hnerv", options)
        decoded = decode_to_frames(path, device="cpu").frames
        psnr = mean_psnr(psnr_per_frame(video.frames, decoded, 255))
        parameters = report.stats.get("model_size") or size
        bits_per_parameter = report.file_bytes * 8 / parameters
        spent += report.file_bytes
        entries.append({"video": name, "model_size": parameters, "file_bytes": report.file_bytes,
                        "budget_bytes": share, "at_smallest_model": size == floor, "bpp": report.bpp,
                        "psnr-rgb": psnr, "train_seconds": report.stats.get("train_seconds")})
        print(f"HNeRV {name}: {report.file_bytes} bytes (budget {share:.0f}), PSNR {psnr:.2f} dB", flush=True)
    baseline_bytes = sum(e["file_bytes"] for e in entries)
    return {"videos": entries, "file_bytes": baseline_bytes, "bpp": baseline_bytes * 8 / sum(pixels),
            "mean_psnr": float(np.mean([e["psnr-rgb"] for e in entries])),
            "size_ratio_to_pfnr": baseline_bytes / file_bytes}


def pfnr_result(names, videos, args, argv, matrix, bit_exact, sizes, set_summary, session_seconds, stats, total_bpp,
                final) -> dict:
    baseline = None
    return {
        "name": "nnc-pfnr",
        "description": f"PFNR set of {len(names)} clips learned in order ({', '.join(names)}), file-size bpp "
                       "(masks, weights, heads, header all counted)",
        "results": {
            "bpp": [total_bpp],
            "psnr-rgb": [float(np.mean(final))],
            "psnr-rgb-per-video": final,
        },
        "meta": {
            "clips": names,
            "frames": [v.info.num_frames for v in videos],
            "resolution": f"{args.width}x{args.height} (centre crop to the aspect ratio, Pillow BOX resize)",
            "continual_matrix_psnr_rgb": matrix,
            "continual_matrix_note": "row s: after learning session s; column v: video v decoded from the file then",
            "bit_exact_recall": bit_exact,
            "file_bytes_after_each_session": sizes,
            "per_video": set_summary["videos"],
            "shared_bytes": set_summary["shared_bytes"],
            "mask_bytes": sum(v["mask_bytes"] for v in set_summary["videos"]),
            "session_seconds": session_seconds,
            "session_stats": stats,
            "hnerv_baseline": baseline,
            "settings": {"size": args.size, "epochs": args.epochs, "lr": args.lr, "loss": args.loss,
                         "capacity": 1 - args.prune, "fso": args.fso, "batch_size": 1, "weight_bits": 8},
            "device": args.device,
            "torch_threads": args.threads,
            "machine": machine_description(),
            "nnc": __version__,
            "command": "python benchmarks/pfnr_benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        },
    }


def write_baseline(path: Path, names, baseline: dict, args, argv) -> None:
    path.write_text(json.dumps({
        "name": "nnc-hnerv-separate",
        "description": f"one HNeRV per clip ({', '.join(names)}), budgets matching the PFNR set's total size",
        "results": {"bpp": [baseline["bpp"]], "psnr-rgb": [baseline["mean_psnr"]]},
        "meta": {"videos": baseline["videos"], "file_bytes": baseline["file_bytes"], "epochs": args.epochs,
                 "batch_size": args.baseline_batch_size, "lr": 1e-3, "loss": "l2",
                 "steps_per_frame": args.epochs / args.baseline_batch_size,
                 "size_ratio_to_pfnr": baseline["size_ratio_to_pfnr"], "machine": machine_description(),
                 "torch_threads": args.threads,
                 "command": "python benchmarks/pfnr_benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:])},
    }, indent=2) + "\n")


def run_baseline_only(names, videos, pixels, args, argv, tag: str, workdir: Path) -> None:
    if args.output is not None:
        path = args.output
    else:
        results = args.out / "results"
        stem = unused_stem(f"pfnr_{tag}_hnerv_baseline_b{args.baseline_batch_size}",
                           lambda t: [results / f"{t}.json"])
        path = results / f"{stem}.json"
    baseline = hnerv_baseline(names, videos, pixels, args.baseline_only, args, workdir)
    write_baseline(path, names, baseline, args, argv)
    print(json.dumps({k: baseline[k] for k in ("bpp", "mean_psnr", "file_bytes")}, indent=2))
    print(f"wrote {path}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", default="bunny,bus,park_joy,foreman", help="comma-separated, learned in this order")
    parser.add_argument("--uvg", type=Path, default=None,
                        help="folder of the official UVG raw files: makes Beauty, Bosphorus, ... usable in --clips")
    parser.add_argument("--bunny", type=Path, default=None, help="the bunny clip (default: the shared media's)")
    parser.add_argument("--height", type=int, default=80)
    parser.add_argument("--width", type=int, default=144)
    parser.add_argument("--frames", type=int, default=16, help="at most this many frames per clip")
    parser.add_argument("--size", type=float, default=1.5e5, help="PFNR model size in parameters (backbone + one head)")
    parser.add_argument("--epochs", type=int, default=60, help="epochs per PFNR session and per HNeRV")
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--loss", default="l2")
    parser.add_argument("--prune", type=float, default=0.5, help="fraction each session's mask leaves out (1 - c)")
    parser.add_argument("--fso", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--baseline-batch-size", type=int, default=2,
                        help="HNeRV baseline's frames per step: 2 is HNeRV's recipe; 1 gives it as many steps as "
                             "PFNR's sessions (batch 1) at equal epochs")
    parser.add_argument("--baseline-only", type=int, metavar="PFNR_FILE_BYTES", default=None,
                        help="run only the HNeRV baseline, against a PFNR file of this many bytes from an earlier "
                             "run (its JSON's file_bytes_after_each_session[-1])")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks")
    parser.add_argument("--tag", default=None)
    parser.add_argument("--output", type=Path, default=None,
                        help="results JSON (overwritten if it exists; the baseline goes next to it as "
                             "NAME_hnerv_baseline.json). Default: OUT/results/pfnr_TAG.json under a new TAG")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a busy 2-core machine more threads were 15x slower)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.bunny is not None:
        CLIPS["bunny"] = (str(args.bunny.resolve()), {})  # MEDIA / an absolute path is that path
    names = [n for n in args.clips.split(",") if n]
    for name in names:
        known = list(CLIPS) + (list(UVG_VIDEOS) if args.uvg is not None else [])
        if name not in known:
            raise SystemExit(f"unknown clip {name!r}; choose from {', '.join(known)}")
        path, _ = clip_source(name, args.uvg)
        if not path.exists():
            raise SystemExit(f"{path.name} not found in {path.parent}")
    tag = args.tag or (f"{len(names)}clips_{args.width}x{args.height}_{args.size / 1e3:g}k_e{args.epochs}"
                       f"_c{1 - args.prune:g}{'' if args.fso else '_nofso'}")
    videos = [load_clip(name, args.height, args.width, args.frames, args.uvg) for name in names]
    options = make_options("pfnr", size=args.size, epochs=args.epochs, lr=args.lr, loss=args.loss, batch_size=1,
                           prune=args.prune, fso=args.fso, device=args.device, show_progress=not args.quiet,
                           checkpoint_interval=0)
    pixels = [v.info.width * v.info.height * v.info.num_frames for v in videos]

    workdir = Path(tempfile.mkdtemp(prefix="pfnr_benchmark_"))
    if args.baseline_only is not None:
        run_baseline_only(names, videos, pixels, args, argv, tag, workdir)
        return
    set_path = workdir / "set.nnc"
    matrix, hashes, sizes, session_seconds, stats = [], [], [], [], []
    for session, (name, video) in enumerate(zip(names, videos)):
        started = time.perf_counter()
        if session == 0:
            report = encode_video_set([(name, video)], set_path, options)
        else:
            report = append_to_set(set_path, video, options, name=name)
        session_seconds.append(time.perf_counter() - started)
        stats.append({k: v for k, v in report.stats[0].items() if isinstance(v, (int, float))})
        sizes.append(set_path.stat().st_size)
        row, row_hashes = [], []
        for index in range(session + 1):
            frames = decode_set_member(set_path, index)
            row.append(mean_psnr(psnr_per_frame(videos[index].frames, frames, 255)))
            row_hashes.append(hashlib.sha256(frames.tobytes()).hexdigest())
        matrix.append(row)
        hashes.append(row_hashes)
        print(f"after session {session} ({name}): PSNR " + " ".join(f"{p:.2f}" for p in row)
              + f" dB, file {sizes[-1]} bytes, {session_seconds[-1]:.0f} s", flush=True)
    bit_exact = all(hashes[s][v] == hashes[v][v] for s in range(len(names)) for v in range(s + 1))
    file_bytes = sizes[-1]
    total_bpp = file_bytes * 8 / sum(pixels)
    final = matrix[-1]
    set_summary, _ = describe_set(inspect_bitstream(set_path.read_bytes()))
    if args.output is not None:
        out_json = args.output
    else:
        results = args.out / "results"
        tag = unused_stem(tag, lambda t: [results / f"pfnr_{t}.json", results / f"pfnr_{t}_hnerv_baseline.json"])
        out_json = results / f"pfnr_{tag}.json"
    baseline_json = out_json.with_name(f"{out_json.stem}_hnerv_baseline.json")
    out_json.parent.mkdir(parents=True, exist_ok=True)

    baseline = None
    result = pfnr_result(names, videos, args, argv, matrix, bit_exact, sizes, set_summary, session_seconds, stats,
                         total_bpp, final)
    out_json.write_text(json.dumps(result, indent=2) + "\n")  # kept even if the baseline fails
    print(f"wrote {out_json}", flush=True)
    if not args.skip_baseline:
        baseline = hnerv_baseline(names, videos, pixels, file_bytes, args, workdir)
        write_baseline(baseline_json, names, baseline, args, argv)
        result["meta"]["hnerv_baseline"] = baseline
        out_json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"pfnr": result["results"], "hnerv": baseline and {k: baseline[k] for k in ("bpp", "mean_psnr")},
                      "bit_exact_recall": bit_exact}, indent=2))
    print(f"wrote {out_json}")


if __name__ == "__main__":
    main()
