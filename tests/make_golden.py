"""Regenerate the golden bitstream: ``python tests/make_golden.py``.

Only run this when the format version changes; then update GOLDEN_* in
tests/test_golden.py with the hashes printed here.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from nnc.bitstream import read_bitstream_file  # noqa: E402
from nnc.codec.api import decode_frames, encode_video  # noqa: E402
from nnc.codec.base import EncodeOptions  # noqa: E402
from synthetic import synthetic_video  # noqa: E402

GOLDEN = Path(__file__).parent / "data" / "golden_hnerv.nnc"


def symbols_digest(bitstream) -> str:
    digest = hashlib.sha256()
    for group in bitstream.groups:
        for tensor in group.tensors:
            digest.update(tensor.name.encode())
            digest.update(np.ascontiguousarray(tensor.symbols, dtype=np.int64).tobytes())
            digest.update(tensor.dequantize().astype(np.float32).tobytes())
    return digest.hexdigest()


def frames_digest(bitstream) -> str:
    return hashlib.sha256(np.concatenate(list(decode_frames(bitstream))).tobytes()).hexdigest()


if __name__ == "__main__":
    video = synthetic_video(num_frames=4, height=32, width=64)
    options = EncodeOptions(size=4e4, epochs=20, batch_size=2, lr=5e-3, device="cpu", show_progress=False)
    encode_video(video, GOLDEN, "hnerv", options)
    bitstream = read_bitstream_file(GOLDEN)
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)")
    print(f'GOLDEN_SYMBOLS_SHA256 = "{symbols_digest(bitstream)}"')
    print(f'GOLDEN_FRAMES_SHA256 = "{frames_digest(bitstream)}"')
