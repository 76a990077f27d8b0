"""Tests of nnc.bitstream: quantizers, entropy coding, the .nnc container and its
behaviour on damaged or hostile input.

Several helpers re-implement pieces of FORMAT.md independently (varints, chunks, a
reference rANS coder) so that the tests check the implementation against the spec,
not against itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import time
import tracemalloc
import zlib
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnc.bitstream import (
    FORMAT_VERSION,
    MAGIC,
    Bitstream,
    QuantizedTensor,
    RawBytes,
    TensorGroup,
    append_group,
    assemble as assemble_file,
    decode_bitstream,
    encode_bitstream,
    encode_group_chunk,
    group_chunks,
    inspect_bitstream,
    quantize_best_axis,
    quantize_per_channel,
    quantize_per_tensor,
    quantize_step,
    read_bitstream_file,
    write_bitstream_file,
)
from nnc.bitstream import entropy
from nnc.bitstream.entropy import EntropyModel
from nnc.errors import InvalidBitstreamError, MediaError, NewerFormatError

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------------------
# Spec-level helpers (written from FORMAT.md, not imported from the implementation)


def uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def svarint(value: int) -> bytes:
    return uvarint(2 * value if value >= 0 else -2 * value - 1)


def text(value: str) -> bytes:
    encoded = value.encode()
    return uvarint(len(encoded)) + encoded


def chunk(tag: bytes, payload: bytes, length: int | None = None) -> bytes:
    head = tag + struct.pack("<I", len(payload) if length is None else length)
    return head + payload + struct.pack("<I", zlib.crc32(head + payload))


def header_payload(codec: str = "test", header: dict | None = None) -> bytes:
    return zlib.compress(json.dumps({"codec": codec, "header": header or {}}).encode())


def assemble(*chunks: bytes, version: int = 1) -> bytes:
    return MAGIC + struct.pack("<H", version) + b"".join(chunks)


def split_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    pos, chunks = len(MAGIC) + 2, []
    while pos < len(data):
        tag, (length,) = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)
        chunks.append((tag, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def descriptor(
    name="t",
    scheme=0,
    bits=8,
    shape=(4,),
    axis=0xFF,
    params=None,
    model=b"\x00" + svarint(0),
    raw_shape: bytes | None = None,
) -> bytes:
    if params is None:
        count = 1 if axis == 0xFF else shape[axis]
        params = [0.0] * count + [1.0] * count
    dims = raw_shape if raw_shape is not None else b"".join(uvarint(d) for d in shape)
    return (
        text(name)
        + bytes([scheme, bits, len(shape)])
        + dims
        + bytes([axis])
        + struct.pack(f"<{len(params)}f", *params)
        + model
    )


def group_payload(descriptors: list[bytes], stream: bytes = b"", name="g", count: int | None = None) -> bytes:
    count = len(descriptors) if count is None else count
    return text(name) + uvarint(count) + b"".join(descriptors) + uvarint(len(stream)) + stream


def file_with_group(payload: bytes) -> bytes:
    return assemble(chunk(b"HEAD", header_payload()), chunk(b"TGRP", payload), chunk(b"TEND", b""))


def reference_rans_encode(symbols_and_tables) -> bytes:
    """FORMAT.md section 6 encoder; tables are (symbols, low, freqs) incl. padding."""
    seq = []
    for symbols, low, freqs in symbols_and_tables:
        starts = np.concatenate(([0], np.cumsum(freqs)))
        seq += [(int(starts[s - low]), int(freqs[s - low])) for s in symbols]
    x, words = 1 << 31, []
    for start, freq in reversed(seq):
        if x >= ((1 << 31 >> 16) << 32) * freq:
            words.append(x & 0xFFFFFFFF)
            x >>= 32
        x = (x // freq << 16) + x % freq + start
    words += [x >> 32, x & 0xFFFFFFFF]
    return b"".join(struct.pack("<I", w) for w in reversed(words))


def reference_rans_decode(stream: bytes, tables) -> list[int]:
    """FORMAT.md section 6 decoder; tables are (count, low, freqs); checks the padding
    and that exactly the whole stream was consumed."""
    words = [w for (w,) in struct.iter_unpack("<I", stream)]
    x, nxt, out = words[0] | words[1] << 32, 2, []
    for count, low, freqs in list(tables) + [(2, 0, [65535, 1])]:
        starts = np.concatenate(([0], np.cumsum(freqs)))
        for _ in range(count):
            slot = x & 0xFFFF
            i = int(np.searchsorted(starts, slot, side="right")) - 1
            x = int(freqs[i]) * (x >> 16) + slot - int(starts[i])
            if x < 1 << 31:
                x = x << 32 | words[nxt]
                nxt += 1
            out.append(low + i)
    assert out[-2:] == [0, 0] and nxt == len(words)
    return out[:-2]


# --------------------------------------------------------------------------------------
# Fixtures


def sample_bitstream(seed: int = 0) -> Bitstream:
    rng = np.random.default_rng(seed)
    weights = rng.laplace(0, 0.05, (8, 4, 3, 3)).astype(np.float32)
    multimodal = rng.choice([-1.0, -0.9, 0.4, 1.0], size=(6, 40)) + rng.normal(0, 0.01, (6, 40))
    return Bitstream(
        codec="hnerv",
        header={"model": {"channels": [16, 8], "ks": 3}, "fps": 29.97, "title": "naïve ✓", "flag": None},
        groups=[
            TensorGroup(
                "weights",
                [
                    quantize_best_axis(weights, 8, "conv.weight"),
                    quantize_per_tensor(multimodal, 6, "multimodal"),
                    quantize_step(rng.normal(0, 0.1, 8), 0.01, "conv.bias"),
                    quantize_per_tensor(np.full((2, 3), 0.5), 4, "constant"),
                ],
            ),
            TensorGroup("embeddings", [quantize_per_channel(rng.normal(size=(5, 2, 3)), 6, 0, "emb")]),
            TensorGroup("empty", []),
        ],
    )


def small_file() -> bytes:
    rng = np.random.default_rng(3)
    bs = Bitstream(
        "hnerv",
        {"v": 1},
        [
            TensorGroup(
                "w",
                [
                    quantize_per_tensor(rng.laplace(0, 1, 40), 4, "a"),
                    quantize_step(np.array([0.0, 0.5, -1.0]), 0.25, "b"),
                    quantize_per_tensor(np.zeros(3), 2, "c"),
                ],
            )
        ],
    )
    return encode_bitstream(bs)


def assert_rejected(data: bytes, match: str | None = None, seconds: float = 2.0) -> InvalidBitstreamError:
    start = time.perf_counter()
    with pytest.raises(InvalidBitstreamError, match=match) as info:
        decode_bitstream(data)
    assert time.perf_counter() - start < seconds
    assert "unexpected" not in info.value.reason, info.value.reason
    return info.value


# --------------------------------------------------------------------------------------
# Deterministic table construction


def test_deterministic_exp_is_accurate_to_an_ulp():
    x = np.linspace(-600, 1, 200_001)
    assert np.max(np.abs(entropy.deterministic_exp(x) / np.exp(x) - 1)) < 4e-16
    assert entropy.deterministic_exp(np.array([-1e300, 1e300])).tolist() == pytest.approx([math.exp(-600), math.e])


def test_deterministic_erfc_matches_libm():
    z = np.linspace(0, 24, 20_001)
    reference = np.array([math.erfc(v) for v in z])
    assert np.max(np.abs(entropy.deterministic_erfc(z) / reference - 1)) < 1.3e-7


# SHA-256 of int64 LE tables; a change means decoders would rebuild different tables
# (computed on AVX-512, and identical with numpy's AVX-512/AVX2 paths disabled).
GOLDEN_TABLES = [
    (("laplace", 0, 256, 127.3, 9.75), "857aebb8abc393ef423b38ec8a60ed3712910ad151b980b3c5b328c87b033c7c"),
    (("logistic", -40, 81, 0.25, 3.5), "72640c9fe58981052b57e100f519318edcb46553c2a9ad7d369656bb6bdb07a2"),
    (("gaussian", 0, 64, 31.5, 0.75), "05dc8270948bbae6ecde83bb881da9554fdf9ba237b02a87e14787efe84fcbd9"),
    (("gaussian", -1000, 2001, 12.0, 300.0), "183645f2c4d04e0bb297d992f4a257f3a55b879d4e37831d968f042071978ae9"),
    (("laplace", 0, 65536, 40000.5, 1234.5), "b1476de1907209012e63fa502715fd97db26e595352faa808d8c10433a1472a4"),
    (("logistic", 0, 300, 5000.0, 0.00390625), "5c66883574d2e129b729c9db695bf5e64b60c392f35acc60075a90214a7d3dcc"),
]


@pytest.mark.parametrize(("params", "digest"), GOLDEN_TABLES)
def test_parametric_tables_are_pinned(params, digest):
    kind, low, size, mean, scale = params
    freqs = entropy.parametric_frequencies(kind, low, size, float(np.float32(mean)), float(np.float32(scale)))
    assert hashlib.sha256(freqs.astype("<i8").tobytes()).hexdigest() == digest


@FAST
@given(
    kind=st.sampled_from(entropy.PARAMETRIC_KINDS),
    low=st.integers(-(2**31), 2**31 - 70_000),
    size=st.one_of(st.integers(2, 600), st.just(65536), st.integers(60_000, 65536)),
    mean_offset=st.floats(-2.0, 3.0),
    log_scale=st.floats(-8, 24),
)
def test_parametric_tables_are_valid(kind, low, size, mean_offset, log_scale):
    mean = float(np.float32(low + mean_offset * size))
    scale = float(np.float32(2.0**log_scale))
    freqs = entropy.parametric_frequencies(kind, low, size, mean, scale)
    assert len(freqs) == size and int(freqs.sum()) == 65536
    assert freqs.min() >= 1 and freqs.max() <= 65535


def test_frequencies_from_masses_handles_degenerate_masses():
    assert entropy.frequencies_from_masses(np.zeros(3), 0.0).tolist() == [21846, 21845, 21845]
    freqs = entropy.frequencies_from_masses(np.array([0.7, 0.7]), 1.0)  # masses above total
    assert int(freqs.sum()) == 65536 and freqs.min() >= 1


# --------------------------------------------------------------------------------------
# Quantizers


float_arrays = st.builds(
    lambda shape, seed, spread, kind: (
        np.random.default_rng(seed).laplace(0, spread, shape)
        if kind == "laplace"
        else np.random.default_rng(seed).integers(-3, 4, shape) * spread
    ).astype(np.float32),
    shape=st.lists(st.integers(1, 5), min_size=0, max_size=4).map(tuple),
    seed=st.integers(0, 2**32 - 1),
    spread=st.sampled_from([1e-6, 0.02, 1.0, 300.0]),
    kind=st.sampled_from(["laplace", "few-values"]),
)


def assert_minmax_properties(q: QuantizedTensor, x: np.ndarray, bits: int) -> None:
    assert q.scheme == "minmax" and q.bits == bits and q.symbols.shape == x.shape
    assert q.offset.dtype == np.float32 and q.scale.dtype == np.float32
    assert q.symbols.min() >= 0 and q.symbols.max() <= 2**bits - 1
    x64 = x.astype(np.float64)
    channels = 1 if q.axis is None else x.shape[q.axis]
    moved = x64.reshape(1, -1) if q.axis is None else np.moveaxis(x64, q.axis, 0).reshape(channels, -1)
    for c in range(channels):
        lo, hi = moved[c].min(), moved[c].max()
        expected = (np.float32(hi) - np.float32(lo)) / np.float32(2**bits - 1)
        assert q.offset[c] == np.float32(lo)
        assert q.scale[c] == (expected if expected > 0 else np.float32(1.0))
    error = np.abs(q.dequantize().astype(np.float64) - x64)
    scale = q.scale[0] if q.axis is None else np.expand_dims(q.scale, [a for a in range(x.ndim) if a != q.axis])
    offset = q.offset[0] if q.axis is None else np.expand_dims(q.offset, [a for a in range(x.ndim) if a != q.axis])
    # float32 rounding of symbol * scale + offset is relative to the operands, not to x
    assert np.all(error <= scale.astype(np.float64) / 2 + 1e-6 * (np.abs(x64) + np.abs(offset) + scale))


@FAST
@given(x=float_arrays, bits=st.integers(1, 16))
def test_quantize_per_tensor_properties(x, bits):
    assert_minmax_properties(quantize_per_tensor(x, bits, "t"), x, bits)


@FAST
@given(x=float_arrays.filter(lambda a: a.ndim > 0), bits=st.integers(1, 16), data=st.data())
def test_quantize_per_channel_properties(x, bits, data):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    q = quantize_per_channel(x, bits, axis, "t")
    assert q.axis == axis % x.ndim and q.offset.shape == (x.shape[q.axis],)
    assert_minmax_properties(q, x, bits)


def test_minmax_uses_all_2_pow_bits_levels():
    q = quantize_per_tensor(np.array([0.0, 1.0, 2.0, 3.0]), 2)
    assert q.symbols.tolist() == [0, 1, 2, 3] and q.scale.tolist() == [1.0]
    assert q.dequantize().tolist() == [0.0, 1.0, 2.0, 3.0]


def test_constant_channels_get_scale_one_and_symbol_zero():
    x = np.array([[5.0, 5.0, 5.0], [1.0, 2.0, 3.0]], dtype=np.float32)
    q = quantize_per_channel(x, 8, 0)
    assert q.scale[0] == 1.0 and q.symbols[0].tolist() == [0, 0, 0]
    assert np.array_equal(q.dequantize()[0], x[0])
    single = quantize_per_tensor(np.float32(-2.5), 8)
    assert single.symbols.shape == () and single.dequantize() == np.float32(-2.5)


@FAST
@given(x=float_arrays, step=st.sampled_from([1e-3, 0.05, 1.0, 7.5]))
def test_quantize_step_properties(x, step):
    q = quantize_step(x, step, "s")
    assert q.scheme == "step" and q.bits == 0 and q.axis is None
    assert q.offset.tolist() == [0.0] and q.scale[0] == np.float32(step)
    assert np.all(np.abs(q.dequantize() - x.astype(np.float64)) <= np.float32(step) / 2 * (1 + 1e-6) + 1e-6 * np.abs(x))


@FAST
@given(x=float_arrays, bits=st.integers(2, 8))
def test_quantize_best_axis_picks_lowest_mse(x, bits):
    best = quantize_best_axis(x, bits, "b")
    candidates = [quantize_per_tensor(x, bits)] + [
        quantize_per_channel(x, bits, a) for a in range(x.ndim) if x.shape[a] > 1
    ]
    mses = [float(np.mean((c.dequantize() - x.astype(np.float64)) ** 2)) for c in candidates]
    best_mse = float(np.mean((best.dequantize() - x.astype(np.float64)) ** 2))
    assert best_mse == min(mses)
    assert best.axis == (None if best_mse == mses[0] else best.axis)


def test_best_axis_prefers_the_axis_whose_channels_differ():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(8, 64)) + 100.0 * np.arange(8)[:, None]
    assert quantize_best_axis(x, 6).axis == 0
    assert quantize_best_axis(x.T, 6).axis == 1


def test_dequantize_is_exactly_symbols_times_scale_plus_offset():
    q = quantize_per_channel(np.random.default_rng(1).normal(size=(3, 7)), 5, 1)
    manual = q.symbols.astype(np.float32) * q.scale[None, :] + q.offset[None, :]
    assert manual.dtype == np.float32 and np.array_equal(q.dequantize().view(np.uint32), manual.view(np.uint32))


@pytest.mark.parametrize(
    "call",
    [
        lambda: quantize_per_tensor(np.ones(3), 0),
        lambda: quantize_per_tensor(np.ones(3), 17),
        lambda: quantize_per_tensor(np.array([1.0, np.nan]), 8),
        lambda: quantize_per_tensor(np.zeros((0, 3)), 8),
        lambda: quantize_per_channel(np.ones((2, 2)), 8, 2),
        lambda: quantize_step(np.ones(3), 0.0),
        lambda: quantize_step(np.array([1e30]), 1e-30),
    ],
)
def test_quantizers_reject_bad_arguments(call):
    with pytest.raises(ValueError):
        call()


# --------------------------------------------------------------------------------------
# Entropy coding


@st.composite
def symbol_arrays(draw):
    shape = tuple(draw(st.lists(st.integers(1, 7), min_size=0, max_size=4)))
    size = int(np.prod(shape))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["constant", "uniform", "laplace", "sparse", "wide", "extreme"]))
    if kind == "constant":
        values = np.full(size, draw(st.integers(-(2**31), 2**31 - 1)))
    elif kind == "uniform":
        values = rng.integers(0, draw(st.integers(1, 300)), size)
    elif kind == "laplace":
        values = np.rint(rng.laplace(draw(st.integers(-100, 100)), draw(st.floats(0.1, 30)), size))
    elif kind == "sparse":
        values = rng.choice([-7, 0, 0, 0, 12, 13], size)
    elif kind == "wide":
        values = rng.integers(0, 65536, size)
        values[0], values[-1] = 0, 65535
    else:  # a signed step tensor near the ends of the int32 range
        base = draw(st.sampled_from([-(2**31), 2**31 - 65536]))
        values = base + rng.integers(0, 65536, size)
    return values.astype(np.int64).reshape(shape)


@FAST
@given(symbols=symbol_arrays())
def test_entropy_round_trip_is_exact_and_matches_the_reference_coder(symbols):
    model = entropy.choose_model(symbols).model
    stream = entropy.encode_symbols([(symbols, model)])
    (decoded,) = entropy.decode_symbols(stream, [(symbols.size, model)], "test")
    assert np.array_equal(decoded, symbols.ravel())
    if model.is_coded:
        freqs = model.frequencies
        assert reference_rans_decode(stream, [(symbols.size, model.low, freqs)]) == symbols.ravel().tolist()
        if symbols.size <= 64:
            pads = ([0, 0], 0, np.array([65535, 1]))
            assert reference_rans_encode([(symbols.ravel().tolist(), model.low, freqs), pads]) == stream
        ideal_bytes = model.ideal_bits(symbols) / 8
        assert ideal_bytes <= len(stream) <= ideal_bytes + 16


@FAST
@given(symbols=symbol_arrays())
def test_model_serialisation_round_trip(symbols):
    model = entropy.choose_model(symbols).model
    writer = entropy.ByteWriter()
    entropy.write_model(writer, model)
    reader = entropy.ByteReader(bytes(writer.buffer), "test")
    parsed = entropy.read_model(reader, "t", entropy.MIN_SYMBOL, entropy.MAX_SYMBOL)
    reader.expect_end("model")
    assert (parsed.kind, parsed.low, parsed.size) == (model.kind, model.low, model.size)
    assert np.array_equal(parsed.frequencies, model.frequencies)


@pytest.mark.parametrize("coding", [entropy.TABLE_CODING_DIRECT, entropy.TABLE_CODING_DELTA])
@pytest.mark.parametrize("k", [0, 3, 15])
def test_histogram_table_code_round_trip(coding, k):
    table = np.random.default_rng(k).multinomial(4096, np.random.default_rng(9).dirichlet(np.ones(50)))
    table[[0, 7]] = [0, 4096 - table.sum() + table[0] + table[7]]
    data = entropy._encode_table(table, coding, k)
    decoded = entropy._decode_table(entropy.ByteReader(data, "t"), data, len(table), coding, k)
    assert decoded.tolist() == table.tolist()


def choice_total(choice) -> float:
    return choice.payload_bits + choice.side_bits


def test_cheapest_model_is_chosen():
    rng = np.random.default_rng(7)
    laplace = np.clip(np.rint(rng.laplace(128, 6, 20_000)), 0, 255).astype(np.int64)
    gaussian = np.clip(np.rint(rng.normal(32, 4, 20_000)), 0, 63).astype(np.int64)
    multimodal = rng.choice([3, 4, 60, 61, 200, 201, 250], 20_000, p=[0.3, 0.1, 0.2, 0.05, 0.15, 0.1, 0.1])
    tiny = np.array([17, 3, 250])
    expected = {"laplace": laplace, "gaussian": gaussian, "histogram": multimodal, "uniform": tiny}
    for kind, symbols in expected.items():
        chosen = entropy.choose_model(symbols)
        assert chosen.model.kind == kind
        # ... and no candidate of any family is cheaper
        low, counts = int(symbols.min()), np.bincount(symbols - symbols.min())
        rivals = [entropy._fit_parametric(k, counts, low, 64) for k in entropy.PARAMETRIC_KINDS]
        rivals += entropy._histogram_candidates(counts, low)
        assert all(choice_total(chosen) <= choice_total(rival) + 1e-6 for rival in rivals)
    assert entropy.choose_model(np.full(9, -4)).model.kind == "constant"


def test_choice_counts_the_table():
    # Plenty of symbols: a transmitted table pays off; few: it does not.
    rng = np.random.default_rng(2)
    mixture = lambda n: rng.choice([0, 1, 2, 40, 41, 42], n)  # noqa: E731
    assert entropy.choose_model(mixture(50_000)).model.kind == "histogram"
    assert entropy.choose_model(mixture(12)).model.kind != "histogram"


def test_symbol_ranges_beyond_the_table_limit_are_refused():
    with pytest.raises(ValueError, match="65536"):
        entropy.choose_model(np.array([0, 65536]))


def test_decoder_never_produces_the_escape_symbol():
    rng = np.random.default_rng(11)
    model = EntropyModel("histogram", 5, 6, precision=4, table=np.array([0, 9, 0, 6, 1, 0]))
    for _ in range(20):
        stream = rng.integers(0, 256, 8 + 4 * rng.integers(0, 30), dtype=np.uint8).tobytes()
        try:
            (out,) = entropy.decode_symbols(stream, [(100, model)], "test")
        except InvalidBitstreamError:
            continue
        assert set(out.tolist()) <= {6, 8, 9}


def test_single_coded_symbol_and_encoder_validation():
    model = EntropyModel("uniform", 0, 4)
    stream = entropy.encode_symbols([(np.array([3]), model)])
    assert entropy.decode_symbols(stream, [(1, model)], "t")[0].tolist() == [3]
    with pytest.raises(ValueError):
        entropy.encode_symbols([(np.array([4]), model)])
    with pytest.raises(ValueError):
        entropy.encode_symbols([(np.array([1]), EntropyModel("histogram", 0, 2, precision=1, table=np.array([2, 0])))])


def test_short_streams_are_padded_not_overread():
    model = EntropyModel("uniform", 0, 65536)
    for stream in (bytes(8), b"\xff" * 8):
        try:
            (out,) = entropy.decode_symbols(stream, [(200_000, model)], "t")
            assert out.min() >= 0 and out.max() <= 65535
        except InvalidBitstreamError:
            pass


# --------------------------------------------------------------------------------------
# Container


def test_container_round_trip():
    bs = sample_bitstream()
    data = encode_bitstream(bs)
    # its step-scheme bias (offset +0.0) goes without its offset, which needs version 4;
    # without that form the file stays version 1, readable by every nnc
    assert data.startswith(MAGIC) and struct.unpack_from("<H", data, len(MAGIC))[0] == 4
    old = encode_bitstream(replace(bs, max_version=3))
    assert struct.unpack_from("<H", old, len(MAGIC))[0] == 1 and len(old) == len(data) + 4
    assert decode_bitstream(old) == bs and encode_bitstream(decode_bitstream(old)) == old
    back = decode_bitstream(data)
    assert back == bs
    assert list(back.header) == list(bs.header) and back.header["title"] == "naïve ✓"
    for group, original in zip(back.groups, bs.groups):
        for tensor, source in zip(group.tensors, original.tensors):
            assert tensor.symbols.shape == source.symbols.shape
            assert tensor.offset.dtype == np.float32 and tensor.scale.dtype == np.float32
            assert np.array_equal(tensor.dequantize().view(np.uint32), source.dequantize().view(np.uint32))
    assert encode_bitstream(back) == data  # deterministic, canonical


tensor_strategy = st.builds(
    lambda symbols, scheme, bits, seed, axis_pick: _make_tensor(symbols, scheme, bits, seed, axis_pick),
    symbols=symbol_arrays().filter(lambda s: s.ndim > 0),
    scheme=st.sampled_from(["minmax", "step"]),
    bits=st.integers(1, 16),
    seed=st.integers(0, 2**32 - 1),
    axis_pick=st.integers(-1, 7),
)


def _make_tensor(symbols, scheme, bits, seed, axis_pick) -> QuantizedTensor:
    rng = np.random.default_rng(seed)
    if scheme == "minmax":
        symbols = (symbols - symbols.min()) % (2**bits)
    else:
        bits = 0
    axis = None if axis_pick < 0 or axis_pick >= symbols.ndim else axis_pick
    count = 1 if axis is None else symbols.shape[axis]
    offset = rng.normal(size=count).astype(np.float32)
    scale = rng.uniform(1e-3, 2, size=count).astype(np.float32)
    return QuantizedTensor(f"t{seed % 1000}.ünï", symbols.astype(np.int32), scheme, bits, axis, offset, scale)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(groups=st.lists(st.lists(tensor_strategy, max_size=4), max_size=3))
def test_container_round_trip_random(groups):
    bs = Bitstream("rand", {"n": len(groups)}, [TensorGroup(f"g{i}", ts) for i, ts in enumerate(groups)])
    data = encode_bitstream(bs)
    assert decode_bitstream(data) == bs
    info = inspect_bitstream(data)
    total = info["container_bytes"] + info["header_bytes"] + sum(g["bytes"] for g in info["groups"])
    assert total == info["file_bytes"] == len(data)


def test_inspect_sizes_add_up():
    bs = sample_bitstream()
    data = encode_bitstream(bs)
    info = inspect_bitstream(data)
    assert info["format_version"] == 4 and info["codec"] == "hnerv" and info["header"] == bs.header
    assert info["file_bytes"] == len(data)
    assert info["container_bytes"] == len(MAGIC) + 2 + 12
    assert info["container_bytes"] + info["header_bytes"] + sum(g["bytes"] for g in info["groups"]) == len(data)
    for group, original in zip(info["groups"], bs.groups):
        assert group["name"] == original.name
        assert group["payload_bytes"] + group["side_info_bytes"] == group["bytes"]
        assert group["num_symbols"] == sum(t.symbols.size for t in original.tensors)
        # the descriptors plus group framing make up the side information
        framing = 12 + len(text(group["name"])) + len(uvarint(len(group["tensors"])))
        framing += len(uvarint(group["payload_bytes"]))
        assert sum(t["side_info_bytes"] for t in group["tensors"]) + framing == group["side_info_bytes"]
        # the rANS stream is within flush overhead of the ideal cost
        ideal = sum(t["payload_bits"] for t in group["tensors"]) / 8
        assert ideal <= group["payload_bytes"] <= ideal + 12 or group["payload_bytes"] == 0
        for tensor, source in zip(group["tensors"], original.tensors):
            assert tensor["name"] == source.name and tensor["shape"] == list(source.shape)
            assert (tensor["scheme"], tensor["bits"], tensor["axis"]) == (source.scheme, source.bits, source.axis)
            assert tensor["entropy_model"] in entropy.MODEL_KINDS
    kinds = {t["name"]: t["entropy_model"] for g in info["groups"] for t in g["tensors"]}
    assert kinds["constant"] == "constant" and kinds["multimodal"] == "histogram"
    json.dumps(info)  # serialisable for `nnc info --json`


def test_hand_built_file_follows_the_spec():
    model = EntropyModel("uniform", 2, 5)
    symbols = np.array([[2, 6], [3, 3]])
    stream = reference_rans_encode([(symbols.ravel().tolist(), 2, model.frequencies), ([0, 0], 0, [65535, 1])])
    uniform = b"\x01" + svarint(2) + uvarint(5)
    payload = group_payload(
        [
            descriptor("u", bits=3, shape=(2, 2), axis=1, params=[0.5, -1, 2, 0.25], model=uniform),
            descriptor("c", scheme=1, bits=0, shape=(), model=b"\x00" + svarint(-9)),
        ],
        stream,
    )
    bs = decode_bitstream(file_with_group(payload))
    u, c = bs.groups[0].tensors
    assert u.symbols.tolist() == [[2, 6], [3, 3]] and u.axis == 1 and u.offset.tolist() == [0.5, -1]
    assert u.dequantize().tolist() == [[2 * 2 + 0.5, 6 * 0.25 - 1], [3 * 2 + 0.5, 3 * 0.25 - 1]]
    assert c.symbols.shape == () and int(c.symbols) == -9 and c.scheme == "step"


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda t: setattr(t, "scheme", "log"), "scheme"),
        (lambda t: setattr(t, "bits", 0), "bits"),
        (lambda t: setattr(t, "symbols", t.symbols + 300), "outside"),
        (lambda t: setattr(t, "symbols", t.symbols.astype(np.float32)), "integers"),
        (lambda t: setattr(t, "axis", 5), "axis"),
        (lambda t: setattr(t, "axis", -1), "axis"),
        (lambda t: setattr(t, "scale", np.array([0.0], np.float32)), "scale"),
        (lambda t: setattr(t, "offset", np.array([np.nan], np.float32)), "finite"),
        (lambda t: setattr(t, "offset", np.zeros(3, np.float32)), "shape"),
        (lambda t: setattr(t, "name", "x" * 300), "exceeds"),
        (lambda t: setattr(t, "symbols", np.zeros((0, 2), np.int32)), "shape"),
    ],
)
def test_encoder_rejects_invalid_tensors(mutate, match):
    tensor = quantize_per_tensor(np.linspace(0, 1, 12).reshape(3, 4), 8, "t")
    mutate(tensor)
    with pytest.raises(ValueError, match=match):
        encode_bitstream(Bitstream("c", {}, [TensorGroup("g", [tensor])]))


@pytest.mark.parametrize(
    ("codec", "header", "match"),
    [
        ("", {}, "empty"),
        ("c", {"x": np.int64(3)}, "JSON"),
        ("c", {"x": float("nan")}, "JSON"),
        ("c", {"x": {1: 2}}, "non-string key"),
        ("c", [1, 2], "dict"),
        ("c" * 65, {}, "exceeds"),
    ],
)
def test_encoder_rejects_invalid_headers(codec, header, match):
    with pytest.raises(ValueError, match=match):
        encode_bitstream(Bitstream(codec, header, []))


def test_encoder_rejects_step_tensors_with_too_wide_a_range():
    tensor = quantize_step(np.array([0.0, 1.0]), 1e-5, "fine")
    with pytest.raises(ValueError, match="coarser"):
        encode_bitstream(Bitstream("c", {}, [TensorGroup("g", [tensor])]))


def test_file_io(tmp_path):
    bs = sample_bitstream()
    path = tmp_path / "out.nnc"
    written = write_bitstream_file(path, bs)
    assert written == path.stat().st_size and read_bitstream_file(str(path)) == bs
    assert os.listdir(tmp_path) == ["out.nnc"]
    # a failing encode leaves an existing file untouched and no temporary behind
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_bitstream_file(path, Bitstream("c", {"bad": object()}, []))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["out.nnc"]
    with pytest.raises(MediaError, match="cannot write"):
        write_bitstream_file(tmp_path / "missing" / "x.nnc", bs)
    with pytest.raises(InvalidBitstreamError, match="cannot read"):
        read_bitstream_file(tmp_path / "nope.nnc")
    with pytest.raises(InvalidBitstreamError, match="cannot read"):
        read_bitstream_file(tmp_path)
    foreign = tmp_path / "video.mp4"
    foreign.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(1000))
    with pytest.raises(InvalidBitstreamError, match="magic"):
        read_bitstream_file(foreign)
    short = tmp_path / "short.nnc"
    short.write_bytes(MAGIC[:3])
    with pytest.raises(InvalidBitstreamError, match="truncated"):
        read_bitstream_file(short)


# --------------------------------------------------------------------------------------
# Damaged and hostile input


def test_truncation_at_every_byte_is_rejected():
    data = small_file()
    decode_bitstream(data)
    for length in range(len(data)):
        assert_rejected(data[:length])


def test_every_single_bit_flip_is_rejected():
    data = bytearray(small_file())
    for bit in range(0, 8 * len(data), 3):
        data[bit // 8] ^= 1 << (bit % 8)
        assert_rejected(bytes(data))
        data[bit // 8] ^= 1 << (bit % 8)


def test_random_payload_damage_with_valid_crc_fails_cleanly():
    """Damage inside chunk payloads, CRC recomputed so that the parser itself is hit:
    the result is a decoded file or InvalidBitstreamError, never anything else."""
    rng = np.random.default_rng(2024)
    chunks = split_chunks(small_file())
    outcomes = set()
    for trial in range(400):
        index = int(rng.integers(0, len(chunks) - 1))
        payload = bytearray(chunks[index][1])
        for _ in range(int(rng.integers(1, 4))):
            position = int(rng.integers(0, len(payload)))
            if trial % 3 == 0:
                payload[position] ^= 1 << int(rng.integers(0, 8))
            else:
                payload[position] = int(rng.integers(0, 256))
        damaged = [chunk(tag, bytes(payload) if i == index else p) for i, (tag, p) in enumerate(chunks)]
        start = time.perf_counter()
        try:
            decode_bitstream(assemble(*damaged))
            outcomes.add("decoded")
        except InvalidBitstreamError as exc:
            assert "unexpected" not in exc.reason, exc.reason
            outcomes.add("rejected")
        assert time.perf_counter() - start < 1.0
    assert "rejected" in outcomes


def test_wrong_magic_and_versions():
    data = small_file()
    assert_rejected(b"GIF89a" + data[6:], "magic")
    assert_rejected(b"", "truncated")
    assert_rejected(MAGIC[:5], "truncated")
    with pytest.raises(NewerFormatError, match="newer"):
        decode_bitstream(MAGIC + struct.pack("<H", FORMAT_VERSION + 1) + data[10:])
    with pytest.raises(NewerFormatError):
        decode_bitstream(MAGIC + b"\xff\xff")
    assert_rejected(MAGIC + b"\x00\x00" + data[10:], "version 0")


def chunk_level_cases():
    head, end = chunk(b"HEAD", header_payload()), chunk(b"TEND", b"")
    group = chunk(b"TGRP", group_payload([descriptor()]))
    return [
        (assemble(head, end) + b"\x00", "trailing"),
        (assemble(head), "end chunk"),
        (assemble(head, chunk(b"TEND", b"x")), "empty"),
        (assemble(head, head, end), "duplicate HEAD"),
        (assemble(group, head, end), "before the HEAD"),
        (assemble(head, chunk(b"XTRA", b""), end), "unknown chunk"),
        (assemble(head, chunk(b"TGRP", b"", length=0xFFFFFFFF), end), "truncated"),
        (assemble(head, group[:-1] + bytes([group[-1] ^ 1]), end), "CRC"),
        (assemble(head, group, end), None),  # valid
    ]


def with_ids(cases):
    return [pytest.param(*case, id=f"{index}-{case[1]}") for index, case in enumerate(cases)]


@pytest.mark.parametrize(("data", "match"), with_ids(chunk_level_cases()))
def test_chunk_structure_errors(data, match):
    if match is None:
        assert decode_bitstream(data).groups[0].tensors[0].symbols.tolist() == [0, 0, 0, 0]
    else:
        assert_rejected(data, match)


def header_cases():
    bomb = zlib.compress(b"{" + b" " * (8 << 20) + b"}", 9)
    nested = zlib.compress(b"[" * 200_000 + b"]" * 200_000)
    return [
        (bomb, "expands beyond"),
        (nested, "not valid JSON"),
        (b"not zlib", "zlib"),
        (zlib.compress(b'{"codec":"c","header":{}}') + b"junk", "extra bytes"),
        (zlib.compress(b'{"codec":"c","header":{}}')[:-3], "incomplete"),
        (zlib.compress(b"\xff\xfe"), "not valid JSON"),
        (zlib.compress(b'{"codec":"c","header":{"x":NaN}}'), "not valid JSON"),
        (zlib.compress(b'{"codec":"c","header":[]}'), "JSON object"),
        (zlib.compress(b'{"codec":"","header":{}}'), "codec name"),
        (zlib.compress(b'{"codec":7,"header":{}}'), "codec name"),
        (zlib.compress(b'{"codec":"c","header":{},"x":1}'), "exactly the keys"),
        (zlib.compress(b"[]"), "exactly the keys"),
    ]


@pytest.mark.parametrize(("payload", "match"), with_ids(header_cases()))
def test_header_errors(payload, match):
    assert_rejected(assemble(chunk(b"HEAD", payload), chunk(b"TEND", b"")), match)


BIG = 1 << 26


def group_cases():
    uniform = b"\x01" + svarint(0) + uvarint(4)
    return [
        (group_payload([], count=5000), "tensor count exceeds"),
        (group_payload([descriptor()], count=2), "truncated"),
        (group_payload([descriptor(shape=(1,) * 9)]), "at most 8"),
        (group_payload([descriptor(shape=(3, 0))]), "dimension 0"),
        (group_payload([descriptor(shape=(BIG, 2))]), "exceed"),
        (group_payload([descriptor(shape=(1 << 40,))]), "exceeds the limit"),
        (group_payload([descriptor(shape=(8192, 8192)), descriptor(shape=(8192, 8192))]), "in total"),
        (group_payload([descriptor(raw_shape=b"\x84\x80\x80\x00")]), "non-minimal"),
        (group_payload([descriptor(raw_shape=b"\xff" * 12)]), "exceeds|overlong"),
        (group_payload([descriptor(name="x" * 300)]), "name length exceeds"),
        (text("g") + uvarint(1) + uvarint(1 << 30), "length exceeds"),
        (group_payload([descriptor(scheme=2)]), "unknown quantization scheme"),
        (group_payload([descriptor(bits=17)]), "bits is invalid"),
        (group_payload([descriptor(scheme=1, bits=8)]), "bits is invalid"),
        (group_payload([descriptor(axis=1, params=[0.0, 1.0])]), "axis 1 is out of range"),
        (group_payload([descriptor(params=[0.0, float("nan")])]), "finite"),
        (group_payload([descriptor(params=[0.0, -1.0])]), "finite"),
        (group_payload([descriptor(params=[float("inf"), 1.0])]), "finite"),
        (group_payload([descriptor(model=b"\x09" + svarint(0))]), "unknown entropy model"),
        (group_payload([descriptor(model=b"\x00" + svarint(256))]), "outside"),
        (group_payload([descriptor(model=b"\x00" + svarint(-1))]), "outside"),
        (group_payload([descriptor(model=b"\x01" + svarint(0) + uvarint(1))]), "at least 2"),
        (group_payload([descriptor(model=b"\x01" + svarint(0) + uvarint(70_000))]), "exceeds the limit"),
        (group_payload([descriptor(model=b"\x01" + svarint(200) + uvarint(100))]), "exceeds 255"),
        (group_payload([descriptor(model=b"\x03" + svarint(0) + uvarint(4) + struct.pack("<2f", 1, 0))]), "scale"),
        (
            group_payload([descriptor(model=b"\x05" + svarint(0) + uvarint(4) + struct.pack("<2f", 1e30, 1))]),
            "mean",
        ),
        (group_payload([descriptor(model=b"\x02" + svarint(0) + uvarint(4) + b"\x11\x00")]), "bad histogram"),
        (group_payload([descriptor(model=b"\x02" + svarint(0) + uvarint(4) + b"\x04\x20")]), "bad histogram"),
        (group_payload([descriptor(model=b"\x02" + svarint(0) + uvarint(4) + b"\x04\x00" + uvarint(10**6))]), "exceeds"),
        # table 16,0,0,0 at precision 4: only one symbol
        (group_payload([descriptor(model=b"\x02" + svarint(0) + uvarint(4) + b"\x04\x00\x02\x08\xf0")]), "2\\+"),
        # exp-Golomb prefix longer than any valid code word
        (group_payload([descriptor(model=b"\x02" + svarint(0) + uvarint(4) + b"\x04\x00\x04" + bytes(4))]), "malformed"),
        (group_payload([descriptor(model=uniform)], b""), "stream length 0"),
        (group_payload([descriptor(model=uniform)], bytes(6)), "stream length"),
        (group_payload([descriptor(model=uniform)], bytes(8 + 4 * 7)), "stream length"),
        (group_payload([descriptor()], bytes(8)), "nothing to decode"),
        (group_payload([descriptor()]) + b"\x00", "extra bytes"),
        (group_payload([descriptor(model=uniform)], b"\xff" * 8), "padding"),
    ]


@pytest.mark.parametrize(("payload", "match"), with_ids(group_cases()))
def test_group_errors_hit_the_bound_checks(payload, match):
    tracemalloc.start()
    try:
        assert_rejected(file_with_group(payload), match, seconds=1.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20


def test_file_wide_symbol_budget_is_enforced_before_decoding():
    laplace = b"\x03" + svarint(0) + uvarint(256) + struct.pack("<2f", 128.0, 10.0)
    tensor = descriptor(shape=(4096, 4096), model=laplace)  # 2**24 coded symbols each
    payload = group_payload([tensor, tensor, descriptor(shape=(2,), model=laplace)], bytes(8))
    assert_rejected(file_with_group(payload), "entropy-coded symbols exceed", seconds=1.0)


def test_groups_must_spend_bits_on_their_symbols(monkeypatch):
    """A near-constant tensor codes a million symbols into a few bytes: the format caps
    symbols per stream byte so that decode time follows file size."""
    from nnc.bitstream import container

    symbols = np.zeros(1 << 20, dtype=np.int32)
    symbols[0] = 1
    tensor = QuantizedTensor("t", symbols, "minmax", 1, None, np.zeros(1, np.float32), np.ones(1, np.float32))
    bitstream = Bitstream("test", {}, [TensorGroup("g", [tensor])])
    with pytest.raises(ValueError, match="symbols per byte"):
        encode_bitstream(bitstream)
    monkeypatch.setattr(container, "_check_coded_symbols_per_byte", lambda coded, size: True)
    data = encode_bitstream(bitstream)
    monkeypatch.undo()
    with pytest.raises(InvalidBitstreamError, match="coded symbols"):
        decode_bitstream(data)


# --------------------------------------------------------------------------------------
# Raw byte strings (format version 2) and the chunk API


def raw_entry(name: str, data: bytes, code: int = 2) -> bytes:
    """FORMAT.md section 4.3: name, code 2, byte count, the bytes."""
    return text(name) + bytes([code]) + uvarint(len(data)) + data


def raw_bitstream() -> Bitstream:
    rng = np.random.default_rng(5)
    return Bitstream(
        "clc",
        {"frames": 2},
        [
            TensorGroup("frame0", [quantize_per_tensor(rng.normal(size=20), 6, "t")],
                        [RawBytes("streams0", rng.bytes(300)), RawBytes("empty", b"")]),
            TensorGroup("frame1", [], [RawBytes("streams1", bytes(range(256)))]),
        ],
    )


def test_raw_bytes_round_trip_and_sizes():
    bs = raw_bitstream()
    data = encode_bitstream(bs)
    assert struct.unpack_from("<H", data, len(MAGIC))[0] == 2 < FORMAT_VERSION  # raw bytes need version 2, no more
    back = decode_bitstream(data)
    assert back == bs and back.groups[1].raw_bytes[0].data == bytes(range(256))
    assert encode_bitstream(back) == data
    info = inspect_bitstream(data)
    assert info["format_version"] == 2
    assert info["container_bytes"] + info["header_bytes"] + sum(g["bytes"] for g in info["groups"]) == len(data)
    frame0, frame1 = info["groups"]
    streams = next(t for t in frame0["tensors"] if t["name"] == "streams0")
    assert streams["scheme"] == "bytes" and streams["payload_bits"] == 8 * 300 and streams["shape"] == [300]
    # name (1 + 8), code (1), count (2) are side information; the bytes themselves payload
    assert streams["side_info_bytes"] == 1 + 8 + 1 + 2
    assert frame1["payload_bytes"] == 256 and frame1["num_symbols"] == 256
    framing = 12 + len(text("frame1")) + len(uvarint(1)) + len(uvarint(0))
    assert frame1["side_info_bytes"] == framing + 1 + 8 + 1 + 2
    json.dumps(info)


def test_hand_built_raw_bytes_follow_the_spec_and_need_version_2():
    model = EntropyModel("uniform", 0, 4)
    stream = reference_rans_encode([([1, 3], 0, model.frequencies), ([0, 0], 0, [65535, 1])])
    uniform = b"\x01" + svarint(0) + uvarint(4)
    payload = group_payload([descriptor("t", shape=(2,), model=uniform), raw_entry("r", b"\x00\xffabc")], stream)
    parts = (chunk(b"HEAD", header_payload()), chunk(b"TGRP", payload), chunk(b"TEND", b""))
    [group] = decode_bitstream(assemble(*parts, version=2)).groups
    assert group.tensors[0].symbols.tolist() == [1, 3]
    assert group.raw_bytes == [RawBytes("r", b"\x00\xffabc")]
    # a version-1 file has no raw bytes: code 2 is an unknown scheme there, as in nnc 1
    assert_rejected(assemble(*parts, version=1), "unknown quantization scheme 2")


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (group_payload([raw_entry("r", b"abc")[:-1]]), "truncated"),
        (group_payload([text("r") + b"\x02" + uvarint((1 << 26) + 1)]), "raw byte count exceeds"),
        (group_payload([text("r") + b"\x02" + uvarint(1 << 26)]), "truncated"),
        (group_payload([raw_entry("r", b"a"), descriptor()]), "tensors come first"),
        (group_payload([raw_entry("r", b"a", code=3)]), "unknown quantization scheme 3"),
        (group_payload([raw_entry("x" * 300, b"a")]), "name length exceeds"),
        (group_payload([raw_entry("r", b"ab")]) + b"\x00", "extra bytes"),
    ],
)
def test_raw_bytes_errors(payload, match):
    data = assemble(chunk(b"HEAD", header_payload()), chunk(b"TGRP", payload), chunk(b"TEND", b""), version=2)
    assert_rejected(data, match, seconds=1.0)


def test_raw_bytes_limits(monkeypatch):
    from nnc.bitstream import container

    with pytest.raises(ValueError, match="must be bytes"):
        encode_bitstream(Bitstream("c", {}, [TensorGroup("g", [], [RawBytes("r", "text")])]))
    with pytest.raises(ValueError, match="exceeds"):
        encode_bitstream(Bitstream("c", {}, [TensorGroup("g", [], [RawBytes("x" * 300, b"")])]))
    monkeypatch.setattr(container, "MAX_RAW_BYTES", 10)
    with pytest.raises(ValueError, match="exceed the limit of 10"):
        encode_bitstream(Bitstream("c", {}, [TensorGroup("g", [], [RawBytes("r", bytes(11))])]))
    monkeypatch.setattr(container, "MAX_RAW_BYTES", 1 << 26)
    monkeypatch.setattr(container, "MAX_FILE_RAW_BYTES", 15)
    two = Bitstream("c", {}, [TensorGroup("a", [], [RawBytes("r", bytes(8))]),
                              TensorGroup("b", [], [RawBytes("r", bytes(8))])])
    with pytest.raises(ValueError, match="would exceed 15 bytes"):
        encode_bitstream(two)
    monkeypatch.setattr(container, "MAX_FILE_RAW_BYTES", 16)
    data = encode_bitstream(two)
    monkeypatch.setattr(container, "MAX_FILE_RAW_BYTES", 15)
    assert_rejected(data, "raw byte strings exceed 15 bytes")


def test_raw_bytes_file_damage_is_rejected():
    data = encode_bitstream(raw_bitstream())
    for length in range(0, len(data), 7):
        assert_rejected(data[:length])
    damaged = bytearray(data)
    for bit in range(0, 8 * len(damaged), 97):
        damaged[bit // 8] ^= 1 << (bit % 8)
        assert_rejected(bytes(damaged))
        damaged[bit // 8] ^= 1 << (bit % 8)


def test_chunk_api_splits_and_joins_files_verbatim():
    from nnc.bitstream import join_chunks
    from nnc.bitstream import split_chunks as api_split_chunks

    for bs in (sample_bitstream(), raw_bitstream()):
        data = encode_bitstream(bs)
        chunks = api_split_chunks(data)
        assert [c.tag for c in chunks] == [b"HEAD"] + [b"TGRP"] * len(bs.groups) + [b"TEND"]
        assert sum(c.size for c in chunks) + len(MAGIC) + 2 == len(data)
        assert join_chunks(chunks) == data
        # the same payloads as the spec-level helper above finds
        assert [c.payload for c in group_chunks(data)] == [p for tag, p in split_chunks(data) if tag == b"TGRP"]
    with pytest.raises(InvalidBitstreamError, match="CRC"):
        damaged = bytearray(data)
        damaged[20] ^= 1
        api_split_chunks(bytes(damaged))
    with pytest.raises(InvalidBitstreamError, match="trailing"):
        api_split_chunks(data + b"\x00")
    with pytest.raises(NewerFormatError):
        api_split_chunks(MAGIC + struct.pack("<H", FORMAT_VERSION + 1) + data[10:])


def test_chunk_api_assembles_and_appends_without_touching_earlier_groups():
    from nnc.bitstream import Chunk

    bs = sample_bitstream()
    data = encode_bitstream(bs)
    # one group encoded alone is the same chunk as inside a whole file
    chunks = [encode_group_chunk(group) for group in bs.groups]
    assert [c.to_bytes() for c in chunks] == [c.to_bytes() for c in group_chunks(data)]
    assert assemble_file(bs.codec, bs.header, chunks) == data
    extra = TensorGroup("extra", [quantize_per_tensor(np.arange(6.0), 3, "e")])
    appended = append_group(data, extra)
    assert appended == encode_bitstream(Bitstream(bs.codec, bs.header, [*bs.groups, extra]))
    assert group_chunks(appended)[:3] == group_chunks(data)
    # a new header, and a raw-bytes group that lifts a version-1 file to version 2
    raw = TensorGroup("raw", [], [RawBytes("r", b"xyz")])
    version_1 = encode_bitstream(replace(bs, max_version=1))
    again = append_group(version_1, raw, header={"videos": 2})
    back = decode_bitstream(again)
    assert back.codec == bs.codec and back.header == {"videos": 2} and back.groups[-1] == raw
    assert inspect_bitstream(version_1)["format_version"] == 1 and inspect_bitstream(again)["format_version"] == 2
    assert [c.payload for c in group_chunks(again)[:3]] == [c.payload for c in group_chunks(version_1)]
    # and one with an offsetless step tensor lifts it to version 4, its groups kept as they are
    step = TensorGroup("step", [quantize_step(np.arange(6.0), 0.5, "s")])
    lifted = append_group(again, step)
    assert inspect_bitstream(lifted)["format_version"] == 4 and decode_bitstream(lifted).groups[-1] == step
    assert [c.payload for c in group_chunks(lifted)[:4]] == [c.payload for c in group_chunks(again)]
    with pytest.raises(ValueError, match="TGRP"):
        assemble_file("c", {}, [Chunk(b"HEAD", b"")])
    with pytest.raises(InvalidBitstreamError):
        append_group(data[:-1], extra)


def test_group_fields_cover_the_payload():
    from nnc.bitstream.chunks import group_fields

    for bs in (sample_bitstream(), raw_bitstream()):
        for chunk_ in group_chunks(encode_bitstream(bs)):
            fields = group_fields(chunk_.payload)
            assert all(0 <= f.start <= f.end <= len(chunk_.payload) for f in fields)
            assert all(f.start < f.end for f in fields if f.kind != "bytes")  # raw bytes may be empty
            starts = [f.start for f in fields]
            assert starts == sorted(starts)
            assert fields[-1].what == "stream length"
    [frame1] = [c for c in group_chunks(encode_bitstream(raw_bitstream())) if b"frame1" in c.payload]
    [raw] = [f for f in group_fields(frame1.payload) if f.kind == "bytes"]
    assert frame1.payload[raw.start : raw.end] == bytes(range(256))
    # the sample's step bias is offsetless: scales, no offsets
    [weights] = [c for c in group_chunks(encode_bitstream(sample_bitstream())) if b"weights" in c.payload]
    whats = [f.what for f in group_fields(weights.payload)]
    assert "tensor 2 scales" in whats and "tensor 2 offsets" not in whats and "tensor 1 offsets" in whats


# --------------------------------------------------------------------------------------
# Offsetless step descriptors (format version 4)


def step_bitstream(offset: np.ndarray | None = None) -> Bitstream:
    """A per-channel step tensor (rate-trained convolution: 40 channels on axis 0), a
    per-tensor one (NIRVANA, a bias) and a minmax one; ``offset`` replaces the first's
    zero offsets."""
    rng = np.random.default_rng(11)
    symbols = np.round(rng.laplace(0, 3, (40, 6, 3))).astype(np.int32)
    scales = rng.uniform(1e-3, 1e-2, 40).astype(np.float32)
    offsets = np.zeros(40, np.float32) if offset is None else offset
    conv = QuantizedTensor("conv.weight", symbols, "step", 0, 0, offsets, scales)
    bias = quantize_step(rng.normal(0, 0.1, 12), 0.01, "conv.bias")
    return Bitstream("test", {"n": 1}, [TensorGroup("weights", [conv, bias, quantize_per_tensor(np.arange(5.0), 4, "m")])])


def test_step_tensors_with_zero_offsets_go_without_them():
    bs = step_bitstream()
    data = encode_bitstream(bs)
    full = encode_bitstream(replace(bs, max_version=3))
    assert struct.unpack_from("<H", data, len(MAGIC))[0] == 4 and struct.unpack_from("<H", full, len(MAGIC))[0] == 1
    assert len(full) - len(data) == 4 * (40 + 1)  # one f32 per offset of both step tensors
    for encoded in (data, full):
        back = decode_bitstream(encoded)
        assert back == bs  # names, symbols, scales bit for bit
        for tensor, source in zip(back.groups[0].tensors, bs.groups[0].tensors):
            assert tensor.scheme == source.scheme and tensor.offset.dtype == np.float32
            assert np.array_equal(tensor.offset.view(np.uint32), np.asarray(source.offset, np.float32).view(np.uint32))
            assert np.array_equal(tensor.dequantize().view(np.uint32), source.dequantize().view(np.uint32))
    assert not decode_bitstream(data).groups[0].tensors[0].offset.view(np.uint32).any()  # +0.0, not -0.0
    # each file re-encodes to its own bytes: a decoded file keeps the forms of its version
    assert decode_bitstream(data).max_version == 4 and encode_bitstream(decode_bitstream(data)) == data
    assert decode_bitstream(full).max_version == 1 and encode_bitstream(decode_bitstream(full)) == full
    # nnc info: the descriptors are 4 bytes per offset shorter, the payload the same
    new, old = inspect_bitstream(data), inspect_bitstream(full)
    assert new["format_version"] == 4 and old["format_version"] == 1
    [group], [old_group] = new["groups"], old["groups"]
    assert old_group["side_info_bytes"] - group["side_info_bytes"] == 4 * 41
    assert group["payload_bytes"] == old_group["payload_bytes"]
    assert [o["side_info_bytes"] - t["side_info_bytes"] for t, o in zip(group["tensors"], old_group["tensors"])] == [
        160, 4, 0]
    assert [t["scheme"] for t in group["tensors"]] == ["step", "step", "minmax"]
    assert new["container_bytes"] + new["header_bytes"] + group["bytes"] == len(data)


@pytest.mark.parametrize("value", [-0.0, 1e-3, -2.5])
def test_step_tensors_with_other_offsets_keep_the_full_form(value):
    offsets = np.zeros(40, np.float32)
    offsets[17] = value  # -0.0 too: (-0.0) * scale + (-0.0) is -0.0, + (+0.0) would make it +0.0
    bs = step_bitstream(offsets)
    bs.groups[0].tensors.pop(1)  # the offsetless bias would lift the file to version 4
    data = encode_bitstream(bs)
    assert struct.unpack_from("<H", data, len(MAGIC))[0] == 1 and data == encode_bitstream(replace(bs, max_version=1))
    [conv, _] = decode_bitstream(data).groups[0].tensors
    assert np.array_equal(conv.offset.view(np.uint32), offsets.view(np.uint32))


def offsetless_descriptor(name="s", shape=(2, 3), axis=0, scales=(0.5, 0.25), model=None) -> bytes:
    """FORMAT.md section 4.1, code 3: a step descriptor without its offsets."""
    model = b"\x01" + svarint(-2) + uvarint(5) if model is None else model  # uniform on [-2, 2]
    dims = b"".join(uvarint(d) for d in shape)
    return (text(name) + bytes([3, 0, len(shape)]) + dims + bytes([axis])
            + struct.pack(f"<{len(scales)}f", *scales) + model)


def test_hand_built_offsetless_descriptor_follows_the_spec_and_needs_version_4():
    symbols = [-2, -1, 0, 1, 2, 2]
    stream = reference_rans_encode([(symbols, -2, EntropyModel("uniform", -2, 5).frequencies), ([0, 0], 0, [65535, 1])])
    parts = (chunk(b"HEAD", header_payload()), chunk(b"TGRP", group_payload([offsetless_descriptor()], stream)),
             chunk(b"TEND", b""))
    [group] = decode_bitstream(assemble(*parts, version=4)).groups
    [tensor] = group.tensors
    assert (tensor.scheme, tensor.bits, tensor.axis, tensor.symbols.tolist()) == ("step", 0, 0, [[-2, -1, 0], [1, 2, 2]])
    assert tensor.scale.tolist() == [0.5, 0.25] and tensor.offset.view(np.uint32).tolist() == [0, 0]
    assert tensor.dequantize().tolist() == [[-1.0, -0.5, 0.0], [0.25, 0.5, 0.5]]
    # nnc writes the same descriptor (up to the entropy model, which it picks itself)
    assert encode_group_chunk(group).payload.startswith(text("g") + uvarint(1) + offsetless_descriptor(model=b""))
    # before version 4, code 3 is an unknown scheme, as it always was
    for version in (1, 2, 3):
        error = assert_rejected(assemble(*parts, version=version), "unknown quantization scheme 3")
        assert "\n" not in str(error)


@pytest.mark.parametrize(
    ("descriptor_bytes", "match"),
    [
        (offsetless_descriptor()[:-3], "truncated"),
        (offsetless_descriptor(scales=(0.5,)), "truncated"),  # one scale short
        (offsetless_descriptor(scales=(0.5, 0.0)), "scales finite and > 0"),
        (offsetless_descriptor(scales=(0.5, float("nan"))), "scales finite and > 0"),
        (offsetless_descriptor()[:3] + b"\x08" + offsetless_descriptor()[4:], "bits is invalid"),
        (offsetless_descriptor(axis=2), "axis 2 is out of range"),
    ],
)
def test_offsetless_descriptor_errors(descriptor_bytes, match):
    data = assemble(chunk(b"HEAD", header_payload()), chunk(b"TGRP", group_payload([descriptor_bytes])),
                    chunk(b"TEND", b""), version=4)
    assert_rejected(data, match)


def test_offsetless_group_chunks_carry_their_version():
    from nnc.bitstream import join_chunks
    from nnc.bitstream import split_chunks as api_split_chunks

    bs = step_bitstream()
    [step_chunk] = [encode_group_chunk(group) for group in bs.groups]
    assert step_chunk.min_version == 4 and encode_group_chunk(bs.groups[0], max_version=3).min_version == 1
    assert step_chunk == group_chunks(encode_bitstream(bs))[0]
    # copied into a file of version 1 (a minmax group), the file becomes version 4
    minmax = encode_bitstream(Bitstream("test", {}, [TensorGroup("m", [quantize_per_tensor(np.arange(4.0), 3, "m")])]))
    data = assemble_file("test", {}, [*group_chunks(minmax), *group_chunks(encode_bitstream(bs))])
    assert inspect_bitstream(data)["format_version"] == 4
    assert decode_bitstream(data).groups[1] == bs.groups[0]
    # forced into a version-3 file it is refused, not misread
    assert_rejected(join_chunks(api_split_chunks(data), 3), "unknown quantization scheme 3")
