"""Entropy-coding benchmark: how close the rANS payload gets to its ideal cost.

    .venv/bin/python benchmarks/entropy_coding.py [--output PATH]

Codes a synthetic but realistic set of tensors (8-bit min-max quantized conv weights
of an HNeRV-like decoder with Laplace, Gaussian and heavy-tailed distributions and
per-channel spread, 8-bit biases, 6-bit frame embeddings; ~0.4M symbols) and writes
``benchmarks/results/entropy_coding.json`` (``entropy_coding_2.json``... when that
exists: a run never replaces the committed result unless ``--output`` names it) with,
per tensor and in total:

* ``payload_bytes``: the actual rANS streams;
* ``ideal_payload_bytes``: Shannon cost of the symbols under each chosen model's
  integer table (what a perfect coder would spend with the same models);
* ``ideal_total_bytes``: ideal payload plus side information (descriptors,
  quantization parameters, model tables);
* ``order0_entropy_bytes``: empirical order-0 entropy of each tensor's symbols, the
  reference a model could reach only if it were free to transmit;
* ratios of these, and generic compressors (zlib, lzma) on the raw symbols for scale.

The target is ``payload_bytes / ideal_payload_bytes <= 1.01``.
"""

from __future__ import annotations

import argparse
import json
import lzma
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from nnc.bitstream import (
    Bitstream,
    TensorGroup,
    decode_bitstream,
    encode_bitstream,
    inspect_bitstream,
    quantize_best_axis,
    quantize_per_tensor,
)
from nnc.bitstream.container import write_file_atomically
from nnc.eval.output_paths import unused_path

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "entropy_coding.json"

# (name, shape, distribution) of an HNeRV-like decoder: conv weights (out*r*r, in, k, k)
CONV_LAYERS = [
    ("decoder.blocks.0.conv.weight", (384, 16, 3, 3), "laplace"),
    ("decoder.blocks.1.conv.weight", (256, 96, 3, 3), "gaussian"),
    ("decoder.blocks.2.conv.weight", (128, 64, 3, 3), "student-t"),
    ("decoder.blocks.3.conv.weight", (64, 32, 3, 3), "laplace"),
    ("decoder.blocks.4.conv.weight", (48, 16, 3, 3), "gaussian"),
    ("decoder.head.weight", (3, 12, 1, 1), "gaussian"),
]
EMBEDDING_SHAPE = (132, 16, 2, 4)  # frames x channels x height x width


def make_tensors(seed: int = 0) -> list[TensorGroup]:
    rng = np.random.default_rng(seed)
    weights = []
    for name, shape, distribution in CONV_LAYERS:
        fan_in = int(np.prod(shape[1:]))
        # trained filters differ in scale from one output channel to the next
        channel_scale = np.sqrt(2.0 / fan_in) * rng.lognormal(0.0, 0.35, (shape[0],) + (1,) * (len(shape) - 1))
        if distribution == "laplace":
            values = rng.laplace(0.0, 1.0 / np.sqrt(2.0), shape)
        elif distribution == "gaussian":
            values = rng.normal(0.0, 1.0, shape)
        else:  # heavy tails: a few outliers stretch the min-max range
            values = rng.standard_t(4.0, shape) / np.sqrt(2.0)
        weights.append(quantize_best_axis((values * channel_scale).astype(np.float32), 8, name))
        bias = rng.normal(0.0, 0.02, shape[0]).astype(np.float32)
        weights.append(quantize_per_tensor(bias, 8, name.replace(".weight", ".bias")))
    # HNeRV frame embeddings: encoder outputs, smooth over time, bounded activations
    base = rng.normal(0.0, 1.0, EMBEDDING_SHAPE[1:])
    drift = np.cumsum(rng.normal(0.0, 0.15, EMBEDDING_SHAPE), axis=0)
    embeddings = np.tanh(0.6 * (base[None] + drift)).astype(np.float32)
    return [
        TensorGroup("weights", weights),
        TensorGroup("embeddings", [quantize_best_axis(embeddings, 6, "embeddings")]),
    ]


def order0_entropy_bits(symbols: np.ndarray) -> float:
    _, counts = np.unique(symbols, return_counts=True)
    return float(np.dot(counts, np.log2(symbols.size / counts)))


def run(output: Path, seed: int = 0) -> dict:
    groups = make_tensors(seed)
    bitstream = Bitstream("benchmark", {"seed": seed}, groups)

    start = time.perf_counter()
    data = encode_bitstream(bitstream)
    encode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    decoded = decode_bitstream(data)
    decode_seconds = time.perf_counter() - start
    if decoded != bitstream:
        raise AssertionError("round trip mismatch")
    info = inspect_bitstream(data)

    tensors = []
    totals = dict(symbols=0, payload=0, ideal_payload_bits=0.0, side_info=0, order0_bits=0.0)
    sources = {t.name: t for group in groups for t in group.tensors}
    for group in info["groups"]:
        totals["payload"] += group["payload_bytes"]
        totals["side_info"] += group["side_info_bytes"]
        for t in group["tensors"]:
            h0 = order0_entropy_bits(sources[t["name"]].symbols)
            totals["symbols"] += t["num_symbols"]
            totals["ideal_payload_bits"] += t["payload_bits"]
            totals["order0_bits"] += h0
            tensors.append(
                {
                    "group": group["name"],
                    "name": t["name"],
                    "shape": t["shape"],
                    "bits": t["bits"],
                    "axis": t["axis"],
                    "num_symbols": t["num_symbols"],
                    "entropy_model": t["entropy_params"],
                    "ideal_payload_bytes": round(t["payload_bits"] / 8, 2),
                    "order0_entropy_bytes": round(h0 / 8, 2),
                    "side_info_bytes": t["side_info_bytes"],
                    "bits_per_symbol": round(t["payload_bits"] / t["num_symbols"], 4),
                }
            )
    ideal_payload = totals["ideal_payload_bits"] / 8
    order0 = totals["order0_bits"] / 8
    raw = np.concatenate([t.symbols.ravel() for t in sources.values()]).astype(np.uint8).tobytes()
    result = {
        "description": __doc__.split("\n\n")[2].strip().replace("\n", " "),
        "num_tensors": len(tensors),
        "num_symbols": totals["symbols"],
        "file_bytes": info["file_bytes"],
        "payload_bytes": totals["payload"],
        "ideal_payload_bytes": round(ideal_payload, 2),
        "side_info_bytes": totals["side_info"],
        "ideal_total_bytes": round(ideal_payload + totals["side_info"], 2),
        "order0_entropy_bytes": round(order0, 2),
        "payload_over_ideal": round(totals["payload"] / ideal_payload, 6),
        "payload_over_order0_entropy": round(totals["payload"] / order0, 6),
        "file_over_order0_entropy": round(info["file_bytes"] / order0, 6),
        "bits_per_symbol": round(8 * totals["payload"] / totals["symbols"], 4),
        "target_payload_over_ideal": 1.01,
        "meets_target": totals["payload"] <= 1.01 * ideal_payload,
        "models_chosen": {kind: sum(t["entropy_model"]["kind"] == kind for t in tensors) for kind in
                          sorted({t["entropy_model"]["kind"] for t in tensors})},
        "generic_compressors_on_raw_symbols": {
            "raw_bytes": len(raw),
            "zlib_9_bytes": len(zlib.compress(raw, 9)),
            "lzma_bytes": len(lzma.compress(raw, preset=9)),
        },
        "encode_seconds": round(encode_seconds, 3),
        "decode_seconds": round(decode_seconds, 3),
        "tensors": tensors,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomically(output, (json.dumps(result, indent=2) + "\n").encode())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=None,
                        help=f"where to write the JSON results (default: {DEFAULT_OUTPUT.name} in "
                             f"benchmarks/results, or the next unused name)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.output = args.output or unused_path(DEFAULT_OUTPUT)
    result = run(args.output, args.seed)
    print(
        f"{result['num_symbols']} symbols in {result['num_tensors']} tensors: "
        f"payload {result['payload_bytes']} B, ideal {result['ideal_payload_bytes']} B "
        f"(ratio {result['payload_over_ideal']:.5f}), side info {result['side_info_bytes']} B, "
        f"order-0 entropy {result['order0_entropy_bytes']} B; "
        f"encode {result['encode_seconds']} s, decode {result['decode_seconds']} s -> {args.output}"
    )
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
