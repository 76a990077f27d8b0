"""HNeRV decoding speed on this machine: ``.venv/bin/python benchmarks/decode_speed.py``.

Decodes a committed bitstream (default: the bunny CPU-tier HNeRV, 132 frames of 320x640,
``benchmarks/bitstreams/bunny_cpu_hnerv_0.375M_e60.nnc``) and records frames per second:

* the network alone (dequantized decoder on the file's embeddings, frames left in
  memory) in both memory layouts, NCHW (what nnc did before) and channels_last (what
  ``nnc decode`` does now), at each batch size of ``--batch-sizes``: the two layouts
  are timed alternately in the same run, so load changes hit both;
* the whole ``nnc decode`` path in this process (read and entropy-decode the file, run
  the network, convert to the source's YUV, write a .y4m), at the CLI's default batch;
* the arithmetic: multiply-accumulates per frame counted from the layers' shapes, and
  the GFLOP/s the best run reached, so the result can be set against the CPU's peak.

Writes ``benchmarks/results/decode_speed_<name>.json`` (``_2``... when it exists, unless
``--output`` names the file), with the load average before and after and whether the
machine was idle (1-minute load below 0.5 before starting).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from nnc import __version__
from nnc.bitstream import read_bitstream_file
from nnc.codec.base import machine_description
from nnc.codec.files import decode_file
from nnc.codec.hnerv import load_decoder
from nnc.eval.output_paths import unused_stem

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_INPUT = REPO / "benchmarks" / "bitstreams" / "bunny_cpu_hnerv_0.375M_e60.nnc"


def multiply_accumulates_per_frame(decoder: torch.nn.Module, embedding: torch.Tensor) -> int:
    """Convolution MACs of one frame, from the shapes the layers really see."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        out_channels, kernel_h, kernel_w = module.out_channels, *module.kernel_size
        in_per_group = module.in_channels // module.groups
        total += output.shape[-2] * output.shape[-1] * out_channels * in_per_group * kernel_h * kernel_w

    hooks = [m.register_forward_hook(count) for m in decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        decoder(embedding[:1])
    for hook in hooks:
        hook.remove()
    return total


def network_frames_per_second(decoder, embedding, batch_size: int, channels_last: bool, frames: int) -> float:
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = decoder.to(memory_format=layout)
    with torch.inference_mode():
        model(embedding[:batch_size].contiguous(memory_format=layout))  # warm-up: oneDNN picks its kernels
        started = time.perf_counter()
        for start in range(0, frames, batch_size):
            batch = embedding[start : min(start + batch_size, frames)].contiguous(memory_format=layout)
            model(batch).contiguous()
        return frames / (time.perf_counter() - started)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="An HNeRV .nnc file.")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: every core)")
    parser.add_argument("--batch-sizes", default="1,4", help="network batch sizes to time (comma-separated)")
    parser.add_argument("--frames", type=int, default=None, help="frames per timed pass (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="passes per setting; the best is kept")
    parser.add_argument("--output", type=Path, help="Result file (default: a new decode_speed_*.json in results/).")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    bitstream = read_bitstream_file(args.input)
    if bitstream.codec != "hnerv":
        parser.error(f"{args.input} is a {bitstream.codec} file; this benchmark times HNeRV")
    media = bitstream.header["media"]
    num_frames, height, width = int(media["num_frames"]), int(media["height"]), int(media["width"])
    frames = min(args.frames or num_frames, num_frames)
    decoder, embedding = load_decoder(bitstream.header["model"], bitstream.groups, num_frames, height, width)
    decoder.eval()
    macs = multiply_accumulates_per_frame(decoder, embedding)

    network = []
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        best = {False: 0.0, True: 0.0}
        for _ in range(args.repeats):
            for channels_last in (False, True):  # alternate, so a load change hits both layouts
                speed = network_frames_per_second(decoder, embedding, batch_size, channels_last, frames)
                best[channels_last] = max(best[channels_last], speed)
        for channels_last, speed in best.items():
            network.append({"batch_size": batch_size, "layout": "channels_last" if channels_last else "nchw",
                            "frames_per_second": round(speed, 2), "gflops": round(speed * 2 * macs / 1e9, 1)})
            print(f"network batch {batch_size} {network[-1]['layout']}: {speed:.2f} frames/s")

    end_to_end = 0.0
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "decoded.y4m"
        for _ in range(args.repeats):
            started = time.perf_counter()
            decode_file(args.input, output, frame_range=(0, frames))
            end_to_end = max(end_to_end, frames / (time.perf_counter() - started))
            output.unlink()
    print(f"nnc decode to .y4m: {end_to_end:.2f} frames/s")

    load_after = os.getloadavg()
    name = args.input.stem
    path = args.output or RESULTS / f"{unused_stem(f'decode_speed_{name}', lambda s: [RESULTS / f'{s}.json'])}.json"
    best_network = max(network, key=lambda row: row["frames_per_second"])
    record = {
        "name": f"nnc hnerv decode speed ({name})",
        "results": {"network": network, "nnc_decode_y4m_frames_per_second": round(end_to_end, 2)},
        "meta": {
            "input": str(args.input.relative_to(REPO) if args.input.is_relative_to(REPO) else args.input),
            "frames": frames, "width": width, "height": height,
            "decoder_parameters": sum(p.numel() for p in decoder.parameters()),
            "multiply_accumulates_per_frame": macs,
            "gflop_per_frame": round(2 * macs / 1e9, 3),
            "target_frames_per_second": 25,
            "gflops_needed_for_target": round(25 * 2 * macs / 1e9, 1),
            "best_network": best_network,
            "threads": args.threads, "repeats": args.repeats,
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in load_after],
            "machine_idle": load_before[0] < 0.5,
            "machine": machine_description(), "cpu_count": os.cpu_count(), "nnc": __version__,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": "python benchmarks/decode_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        },
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
