"""Golden bitstreams: .nnc files checked into tests/data must keep decoding to the same frames.

If this fails after a change, the change broke compatibility with files users already
have: either restore the old behaviour, or bump FORMAT_VERSION (keeping a reader for
the old version) and regenerate with ``python tests/make_golden.py``.

What is compared, and how strictly:

* the file bytes, every coded symbol and every dequantized parameter: exactly (integer
  and float32 arithmetic on stored values, the same on every machine);
* the decoded frames: against reference frames committed next to each file
  (``*_frames.npz``, decoded from the committed file), allowing a difference of at most
  one code value on at most ``MAX_ROUNDING_FLIPS`` of the values.  Exact frame hashes
  are not portable: the decoder's float32 convolutions (and PFNR's FFTs) sum in an
  order that depends on the CPU's kernels (AVX2 vs AVX-512, oneDNN's choices), and the
  frame hash committed from another machine did not match on an AMD EPYC (AVX2) one.
  Rounding analysis of golden_hnerv.nnc: its float32 decode lies within 2.2e-7 (mean
  2e-8) of a float64 decode, so another summation order moves a value by ~1e-7..1e-6;
  a value in [0, 1] rounded to 8 bits flips only when it lies that close to a .5
  boundary: 16 of its 24,576 values lie within 1e-6 of one (0.07%), 151 within 1e-5
  (0.6%); relative noise of 1e-6 on every convolution output flipped 1 value.  1%
  leaves room for kernels with larger error (Winograd, FFT) and still fails a decoder
  that computes something else (measured: PFNR's modes misplaced or read with another
  mode count fail).  Changes of the coded parameters are the symbols test's job: one
  weight symbol one step off moves at most 30 values by one code value (measured on
  seven tensors), which this tolerance alone would not see.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from nnc.bitstream import (FORMAT_VERSION, Bitstream, decode_bitstream, encode_bitstream, inspect_bitstream,
                           read_bitstream_file)
from nnc.codec import pfnr as pfnr_codec
from nnc.codec.base import float_to_frames
from nnc.codec.video_api import decode_frames

from make_golden import symbols_digest

GOLDEN = Path(__file__).parent / "data" / "golden_hnerv.nnc"
GOLDEN_FILE_SHA256 = "6082c1eec088b66557c511798666e4e11a117c2912fea2a4af1bb17ad3f816d1"
GOLDEN_SYMBOLS_SHA256 = "ff0de01cda820fa9a5dc167b12a278e65f5de81858aff7b55d85d286d108cf5b"
GOLDEN_FRAMES = GOLDEN.with_name("golden_hnerv_frames.npz")
MAX_ROUNDING_FLIPS = 0.01  # fraction of decoded values allowed one code value off (module docstring)

# A PFNR set written by nnc before issue 14 (commit 718f5b0), whose FSO stage kept 3
# modes ("fso_modes": 3 in its header; new files keep every mode).  Two videos of 3
# frames, 64x36, 60k parameters, 10 epochs per session: it cannot be regenerated, it is
# the old file.  Its frames were decoded by that same commit.
GOLDEN_PFNR = GOLDEN.with_name("golden_pfnr_fso3.nnc")
GOLDEN_PFNR_FRAMES = GOLDEN.with_name("golden_pfnr_fso3_frames.npz")
GOLDEN_PFNR_SHA256 = "67dd98eb233c10910e00a6ebaeeeaa51c1bc3ff93c8a8586c483ae91a80bacfa"


def test_golden_file_is_unchanged_and_current_version():
    data = GOLDEN.read_bytes()
    assert hashlib.sha256(data).hexdigest() == GOLDEN_FILE_SHA256
    assert read_bitstream_file(GOLDEN).codec == "hnerv"
    # A file without raw byte strings is still written as version 1 (FORMAT.md, Versions),
    # so the golden file is what nnc writes today (test_golden_reencodes_to_the_same_bytes).
    assert inspect_bitstream(data)["format_version"] == 1 and FORMAT_VERSION >= 1


def test_golden_symbols_and_parameters_decode_exactly():
    assert symbols_digest(read_bitstream_file(GOLDEN)) == GOLDEN_SYMBOLS_SHA256


def assert_same_frames_up_to_rounding(decoded: np.ndarray, reference: np.ndarray) -> None:
    """Equal, except at most one code value on at most MAX_ROUNDING_FLIPS of the values."""
    assert decoded.shape == reference.shape and decoded.dtype == reference.dtype
    difference = np.abs(decoded.astype(np.int32) - reference.astype(np.int32))
    assert difference.max() <= 1, f"a value moved by {difference.max()} code values"
    flipped = np.count_nonzero(difference)
    assert flipped <= MAX_ROUNDING_FLIPS * difference.size, f"{flipped} of {difference.size} values differ"


def test_golden_frames_match_the_reference_frames():
    with np.load(GOLDEN_FRAMES) as stored:
        reference = stored["frames"]
    assert reference.shape == (4, 32, 64, 3) and reference.dtype == np.uint8
    frames = np.concatenate(list(decode_frames(read_bitstream_file(GOLDEN))))
    assert_same_frames_up_to_rounding(frames, reference)


def test_pfnr_file_from_before_issue_14_decodes_with_its_own_mode_count():
    data = GOLDEN_PFNR.read_bytes()
    assert hashlib.sha256(data).hexdigest() == GOLDEN_PFNR_SHA256
    bitstream = read_bitstream_file(GOLDEN_PFNR)
    assert encode_bitstream(bitstream) == data
    config, infos = pfnr_codec.parse_set_header(bitstream.header["model"])
    # The header's 3 modes, not today's default (every mode of the stage, 9x10 here).
    assert (config.fso_stage, config.fso_modes, config.fso_shape()) == (2, 3, (6, 3))
    with np.load(GOLDEN_PFNR_FRAMES) as stored:
        references = [stored["video0"], stored["video1"]]
    assert len(infos) == 2
    for index, (info, reference) in enumerate(zip(infos, references)):
        state = pfnr_codec.replay(config, bitstream.groups[: index + 1])
        batches = pfnr_codec.decode_session(state, index, info.num_frames, info.height, info.width)
        frames = np.concatenate([float_to_frames(batch, 255) for batch in batches])
        assert reference.shape == (3, 36, 64, 3)
        assert_same_frames_up_to_rounding(frames, reference)


def test_golden_reencodes_to_the_same_bytes():
    assert encode_bitstream(read_bitstream_file(GOLDEN)) == GOLDEN.read_bytes()


# A NIRVANA file (``python tests/make_golden.py nirvana``): 8 frames of 64x32 in two groups
# of 4, so it holds an intra group and a residual group (integer differences from the
# first), with independent 16x16 patches.
GOLDEN_NIRVANA = GOLDEN.with_name("golden_nirvana.nnc")
GOLDEN_NIRVANA_FRAMES = GOLDEN.with_name("golden_nirvana_frames.npz")
GOLDEN_NIRVANA_SHA256 = "c7ce0fb918f5f359041e50d234772539878fb1057850e454c82bb7cacf9405e2"
GOLDEN_NIRVANA_SYMBOLS_SHA256 = "f224a75948e8fcd6c458ccf7377391933818fa9f752576539dcc2e86496f9740"


def test_nirvana_golden_file_decodes_to_the_same_symbols_and_frames():
    data = GOLDEN_NIRVANA.read_bytes()
    assert hashlib.sha256(data).hexdigest() == GOLDEN_NIRVANA_SHA256
    bitstream = read_bitstream_file(GOLDEN_NIRVANA)
    assert bitstream.codec == "nirvana" and len(bitstream.groups) == 2
    assert encode_bitstream(bitstream) == data
    assert symbols_digest(bitstream) == GOLDEN_NIRVANA_SYMBOLS_SHA256
    with np.load(GOLDEN_NIRVANA_FRAMES) as stored:
        reference = stored["frames"]
    assert reference.shape == (8, 32, 64, 3) and reference.dtype == np.uint8
    frames = np.concatenate(list(decode_frames(bitstream)))
    assert_same_frames_up_to_rounding(frames, reference)


def test_nirvana_golden_groups_written_anew_drop_their_zero_offsets():
    """The decoded file re-encodes to its own version-1 bytes (above); the same groups in
    a new bitstream take the offsetless step descriptors of version 4: 4 bytes less per
    tensor (NIRVANA's steps are per tensor), the same symbols and parameters."""
    data = GOLDEN_NIRVANA.read_bytes()
    old = read_bitstream_file(GOLDEN_NIRVANA)
    tensors = sum(len(group.tensors) for group in old.groups)
    assert all(t.scheme == "step" and t.axis is None for group in old.groups for t in group.tensors)
    new = encode_bitstream(Bitstream(old.codec, old.header, old.groups))
    assert inspect_bitstream(new)["format_version"] == 4 and len(data) - len(new) == 4 * tensors
    again = decode_bitstream(new)
    assert again == old and symbols_digest(again) == GOLDEN_NIRVANA_SYMBOLS_SHA256
    assert encode_bitstream(again) == new


def test_nirvana_golden_region_decodes_from_its_own_patches():
    """One 16x16 patch of the residual group, rendered alone, equals that crop of the
    reference frames (patch-parallel decoding of a file already in users' hands)."""
    from nnc.codec.nirvana import decode_region

    bitstream = read_bitstream_file(GOLDEN_NIRVANA)
    with np.load(GOLDEN_NIRVANA_FRAMES) as stored:
        reference = stored["frames"]
    region = (16, 32, 32, 48)  # top, left, bottom, right
    batches = decode_region(bitstream.header["model"], bitstream.groups, 8, 32, 64, region, frames=range(4, 8))
    frames = np.concatenate([float_to_frames(batch, 255) for batch in batches])
    assert_same_frames_up_to_rounding(frames, reference[4:8, 16:32, 32:48])
