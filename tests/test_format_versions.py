"""Files of every format version keep decoding to the same frames.

``data/golden_clc_v1.nnc`` was written by nnc before format version 2 (commit 718f5b0,
``encode_image(synthetic_frames(1, 48, 64, seed=7)[0], ..., "clc", quality=1)`` with the
shipped weights): CLC then stored CompressAI's rANS strings as a 1-D 8-bit minmax
tensor.  Version 2 stores the same bytes as a raw byte string (FORMAT.md section 4.3);
both must decode to the same image.  The HNeRV golden file (test_golden.py) covers
version-1 files without raw bytes, which nnc still writes byte for byte.  Version 4
drops the zero offsets of step tensors: the NIRVANA golden file's groups, written anew,
must decode to the same frames.

The shipped CLC weights changed since (one variable-rate model); the single-rate weights
that wrote ``golden_clc_v1.nnc`` live on in ``models/weights/clc/v1/``, and the decoder
finds them by the hash the file names.  ``data/golden_clc_variable_rate.nnc``
(``python tests/make_golden.py clc``: quality 2.5 with the variable-rate weights) must
keep decoding to its stored frame.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from click.testing import CliRunner

from nnc.bitstream import Bitstream, RawBytes, TensorGroup, decode_bitstream, encode_bitstream, inspect_bitstream
from nnc.cli.main import main
from nnc.errors import NncError
from nnc.codec.files import decode_to_frames
from synthetic import synthetic_frames

GOLDEN_CLC_V1 = Path(__file__).parent / "data" / "golden_clc_v1.nnc"
GOLDEN_CLC_V1_SHA256 = "59c79f17f4938a7bbb35f21a673f64de5b18d5d1370f1c055a65df895070c56f"
GOLDEN_CLC_V1_PSNR = 21.6157  # RGB PSNR against its source, as the encoder reported it
GOLDEN_CLC_VARIABLE_RATE = GOLDEN_CLC_V1.with_name("golden_clc_variable_rate.nnc")
GOLDEN_CLC_VARIABLE_RATE_SHA256 = "61b539804d67043019b549b6ec7a8bedb45b9a36263cbf92f5dcb01927edd78c"
GOLDEN_NIRVANA = GOLDEN_CLC_V1.with_name("golden_nirvana.nnc")  # version 1, step tensors with zero offsets


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def test_clc_file_of_format_version_1_decodes_like_its_version_2_rewrite(tmp_path):
    data = GOLDEN_CLC_V1.read_bytes()
    assert hashlib.sha256(data).hexdigest() == GOLDEN_CLC_V1_SHA256
    assert inspect_bitstream(data)["format_version"] == 1
    old = decode_bitstream(data)
    [tensor] = old.groups[0].tensors
    assert (tensor.name, tensor.scheme, tensor.bits, tensor.symbols.ndim) == ("streams0", "minmax", 8, 1)
    frames_v1 = decode_to_frames(GOLDEN_CLC_V1, device="cpu").frames
    source = synthetic_frames(1, 48, 64, seed=7)[0]
    assert frames_v1.shape == (1, 48, 64, 3)
    assert psnr(frames_v1[0], source) == pytest.approx(GOLDEN_CLC_V1_PSNR, abs=0.05)

    # The same strings as a raw byte string: a version-2 file, smaller, same image.
    strings = np.asarray(tensor.symbols).astype(np.uint8).tobytes()
    rewritten = encode_bitstream(Bitstream(old.codec, old.header, [TensorGroup("frame0", [], [RawBytes("streams0", strings)])]))
    assert inspect_bitstream(rewritten)["format_version"] == 2
    assert len(rewritten) < len(data)  # no entropy-model table, no rANS pass over bytes that cannot shrink
    path = tmp_path / "v2.nnc"
    path.write_bytes(rewritten)
    frames_v2 = decode_to_frames(path, device="cpu").frames
    assert np.array_equal(frames_v1, frames_v2)


def test_new_clc_files_store_raw_bytes():
    from nnc.codec.clc import CLCCodec
    from nnc.media import Video, VideoInfo

    image = synthetic_frames(1, 48, 64, seed=7)
    info = VideoInfo.from_dict(decode_bitstream(GOLDEN_CLC_V1.read_bytes()).header["media"])
    compressed = CLCCodec().compress(Video(frames=image, info=info), CLCCodec.make_options(quality=1, show_progress=False))
    [group] = compressed.groups
    assert group.tensors == [] and [entry.name for entry in group.raw_bytes] == ["streams0"]
    [entry] = compressed.model_header["frames"]
    assert len(group.raw_bytes[0].data) == sum(entry["lengths"])
    data = encode_bitstream(Bitstream("clc", {"media": info.to_dict(), "model": compressed.model_header}, [group]))
    assert inspect_bitstream(data)["format_version"] == 2


def test_variable_rate_clc_golden_file_decodes_to_its_frame():
    data = GOLDEN_CLC_VARIABLE_RATE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == GOLDEN_CLC_VARIABLE_RATE_SHA256
    assert inspect_bitstream(data)["format_version"] == 2
    model_header = decode_bitstream(data).header["model"]
    assert model_header["quality"] == 2.5 and len(model_header["config"]["rate_lambdas"]) == 6
    frames = decode_to_frames(GOLDEN_CLC_VARIABLE_RATE, device="cpu").frames
    expected = np.load(GOLDEN_CLC_VARIABLE_RATE.with_name("golden_clc_variable_rate_frame.npz"))["frame"]
    # Bit-exact on the machine that wrote it; elsewhere float rounding may move a pixel
    # by one level, never more (a decoder that loses sync produces garbage).
    difference = np.abs(frames[0].astype(int) - expected.astype(int))
    assert frames.shape == (1, 48, 64, 3) and difference.max() <= 1 and (difference == 0).mean() > 0.99
    assert psnr(frames[0], synthetic_frames(1, 48, 64, seed=7)[0]) > GOLDEN_CLC_V1_PSNR


@pytest.fixture(scope="module")
def nirvana_v4(tmp_path_factory) -> Path:
    """The NIRVANA golden file's groups written anew: a version-4 file."""
    old = decode_bitstream(GOLDEN_NIRVANA.read_bytes())
    path = tmp_path_factory.mktemp("v4") / "nirvana_v4.nnc"
    path.write_bytes(encode_bitstream(Bitstream(old.codec, old.header, old.groups)))
    return path


def test_offsetless_nirvana_file_decodes_to_the_frames_of_its_version_1_original(nirvana_v4):
    assert inspect_bitstream(nirvana_v4.read_bytes())["format_version"] == 4
    assert nirvana_v4.stat().st_size < GOLDEN_NIRVANA.stat().st_size
    frames_v1 = decode_to_frames(GOLDEN_NIRVANA, device="cpu").frames
    assert np.array_equal(decode_to_frames(nirvana_v4, device="cpu").frames, frames_v1)


def test_an_older_reader_refuses_version_4_as_newer(nirvana_v4, monkeypatch):
    from nnc.bitstream import framing

    monkeypatch.setattr(framing, "FORMAT_VERSION", 3)  # what nnc read before offsetless step tensors
    result = CliRunner().invoke(main, ["info", str(nirvana_v4)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 3 and len(lines) == 1, result.output
    assert "format version 4 is newer than version 3 that this nnc reads" in lines[0]
    assert CliRunner().invoke(main, ["info", str(GOLDEN_NIRVANA)]).exit_code == 0  # version 1 still reads


def test_rewrite_tool_writes_an_old_file_in_the_newest_forms_with_the_same_frames(tmp_path):
    import rewrite_bitstream  # tools/ is on pytest's pythonpath

    output = tmp_path / "nirvana_v4.nnc"
    old, new = rewrite_bitstream.rewrite(GOLDEN_NIRVANA, output)
    assert inspect_bitstream(GOLDEN_NIRVANA.read_bytes())["format_version"] == 1
    assert inspect_bitstream(output.read_bytes())["format_version"] == 4 and new < old == GOLDEN_NIRVANA.stat().st_size
    copy = tmp_path / "golden.nnc"
    copy.write_bytes(GOLDEN_NIRVANA.read_bytes())
    with pytest.raises(NncError, match="is the input"):
        rewrite_bitstream.rewrite(copy, copy)
    assert copy.read_bytes() == GOLDEN_NIRVANA.read_bytes()
