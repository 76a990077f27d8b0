"""Regenerate the golden bitstream: ``python tests/make_golden.py``.

Only run this when the format version changes; then update GOLDEN_* in
tests/test_golden.py with the hashes printed here.  It also rewrites the reference
frames (golden_hnerv_frames.npz) that the decoded frames are compared with.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from nnc.bitstream import read_bitstream_file  # noqa: E402
from nnc.codec.hnerv import HNeRVOptions  # noqa: E402
from nnc.codec.video_api import decode_frames, encode_video  # noqa: E402
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


def write_reference_frames(bitstream, path: Path) -> None:
    """The decoded frames, compared up to rounding (not hashed: see tests/test_golden.py)."""
    np.savez_compressed(path, frames=np.concatenate(list(decode_frames(bitstream))))


if __name__ == "__main__":
    video = synthetic_video(num_frames=4, height=32, width=64)
    options = HNeRVOptions(size=4e4, epochs=20, batch_size=2, lr=5e-3, device="cpu", show_progress=False)
    encode_video(video, GOLDEN, "hnerv", options)
    bitstream = read_bitstream_file(GOLDEN)
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)")
    print(f'GOLDEN_SYMBOLS_SHA256 = "{symbols_digest(bitstream)}"')
    write_reference_frames(bitstream, GOLDEN.with_name("golden_hnerv_frames.npz"))
    print(f"wrote {GOLDEN.with_name('golden_hnerv_frames.npz')}")
