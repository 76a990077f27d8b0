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
from nnc.codec.nirvana import NIRVANAOptions  # noqa: E402
from nnc.codec.video_api import decode_frames, encode_video  # noqa: E402
from synthetic import synthetic_video  # noqa: E402

GOLDEN = Path(__file__).parent / "data" / "golden_hnerv.nnc"
GOLDEN_NIRVANA = GOLDEN.with_name("golden_nirvana.nnc")


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


def make_nirvana_golden() -> None:
    """NIRVANA: 8 frames of 32x64 in two groups of 4 (an intra group and a residual group),
    independent 16x16 patches, so the file exercises the residual chain and the per-patch
    upsampler.  ``python tests/make_golden.py nirvana``."""
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    video = synthetic_video(num_frames=8, height=32, width=64)
    options = NIRVANAOptions(size=3000, epochs=20, lr=5e-3, rate_lambda=1e-3, device="cpu",
                             show_progress=False, checkpoint_interval=0, force=True)
    encode_video(video, GOLDEN_NIRVANA, "nirvana", options)
    bitstream = read_bitstream_file(GOLDEN_NIRVANA)
    data = GOLDEN_NIRVANA.read_bytes()
    print(f"wrote {GOLDEN_NIRVANA} ({len(data)} bytes)")
    print(f'GOLDEN_NIRVANA_SHA256 = "{hashlib.sha256(data).hexdigest()}"')
    print(f'GOLDEN_NIRVANA_SYMBOLS_SHA256 = "{symbols_digest(bitstream)}"')
    write_reference_frames(bitstream, GOLDEN_NIRVANA.with_name("golden_nirvana_frames.npz"))


def make_clc_variable_rate_golden() -> None:
    """CLC with the shipped variable-rate weights at the fractional quality 2.5 (gains
    interpolated between two trained rate points), a 48x64 image padded to 64x64 and
    cropped back.  ``python tests/make_golden.py clc``; only when the shipped weights change
    (which also makes the previous file need its weights kept in a subfolder)."""
    from nnc.codec.clc import CLCOptions
    from nnc.codec.files import decode_image
    from nnc.codec.image_api import encode_image
    from synthetic import synthetic_frames

    path = GOLDEN.with_name("golden_clc_variable_rate.nnc")
    encode_image(synthetic_frames(1, 48, 64, seed=7)[0], path, "clc", CLCOptions(quality=2.5, show_progress=False))
    data = path.read_bytes()
    print(f"wrote {path} ({len(data)} bytes)")
    print(f'GOLDEN_CLC_VARIABLE_RATE_SHA256 = "{hashlib.sha256(data).hexdigest()}"')
    np.savez_compressed(path.with_name("golden_clc_variable_rate_frame.npz"), frame=decode_image(path))


if __name__ == "__main__" and sys.argv[1:] == ["nirvana"]:
    make_nirvana_golden()
elif __name__ == "__main__" and sys.argv[1:] == ["clc"]:
    make_clc_variable_rate_golden()
elif __name__ == "__main__":
    video = synthetic_video(num_frames=4, height=32, width=64)
    options = HNeRVOptions(size=4e4, epochs=20, batch_size=2, lr=5e-3, device="cpu", show_progress=False)
    encode_video(video, GOLDEN, "hnerv", options)
    bitstream = read_bitstream_file(GOLDEN)
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)")
    print(f'GOLDEN_SYMBOLS_SHA256 = "{symbols_digest(bitstream)}"')
    write_reference_frames(bitstream, GOLDEN.with_name("golden_hnerv_frames.npz"))
    print(f"wrote {GOLDEN.with_name('golden_hnerv_frames.npz')}")
