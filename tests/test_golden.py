"""Golden bitstream: a .nnc file checked into tests/data must keep decoding to the same frames.

If this fails after a change, the change broke compatibility with files users already
have: either restore the old behaviour, or bump FORMAT_VERSION (keeping a reader for
the old version) and regenerate with ``python tests/make_golden.py``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from nnc.bitstream import FORMAT_VERSION, encode_bitstream, read_bitstream_file
from nnc.codec.api import decode_frames

from make_golden import frames_digest, symbols_digest

GOLDEN = Path(__file__).parent / "data" / "golden_hnerv.nnc"
GOLDEN_FILE_SHA256 = "6082c1eec088b66557c511798666e4e11a117c2912fea2a4af1bb17ad3f816d1"
GOLDEN_SYMBOLS_SHA256 = "ff0de01cda820fa9a5dc167b12a278e65f5de81858aff7b55d85d286d108cf5b"
GOLDEN_FRAMES_SHA256 = "950c2a692601cdfe084f9e3b05a4f0bf04b703ed347ea97fd6fd67f5ce1f17b4"


def test_golden_file_is_unchanged_and_current_version():
    data = GOLDEN.read_bytes()
    assert hashlib.sha256(data).hexdigest() == GOLDEN_FILE_SHA256
    assert read_bitstream_file(GOLDEN).codec == "hnerv"
    assert FORMAT_VERSION == 1, "format version changed: regenerate the golden file (see module docstring)"


def test_golden_symbols_and_parameters_decode_exactly():
    assert symbols_digest(read_bitstream_file(GOLDEN)) == GOLDEN_SYMBOLS_SHA256


def test_golden_frames_hash():
    bitstream = read_bitstream_file(GOLDEN)
    frames = np.concatenate(list(decode_frames(bitstream)))
    assert frames.shape == (4, 32, 64, 3)
    assert frames_digest(bitstream) == GOLDEN_FRAMES_SHA256


def test_golden_reencodes_to_the_same_bytes():
    assert encode_bitstream(read_bitstream_file(GOLDEN)) == GOLDEN.read_bytes()
