"""Header values are untrusted: every model config field and every media field is checked
by type and range in one place, and anything hostile is a one-line ValueError, never
an OverflowError, TypeError, AttributeError or UnicodeEncodeError (issue 17).

The hostile values are what a JSON header can carry after an edit with a valid CRC:
huge integers (10**39, 10**400), 1e400 (parsed as inf), bools for numbers, strings for
numbers, lone surrogates, nested lists, overlong lists.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from fractions import Fraction

import pytest

from nnc.media import VideoInfo
from nnc.models.clc import CLCConfig
from nnc.models.config import check_fields
from nnc.models.hinerv import HiNeRVConfig
from nnc.models.hnerv import HNeRVConfig
from nnc.models.nerv import NeRVConfig
from nnc.models.nervpp import NeRVPPConfig
from nnc.models.nirvana import NIRVANAConfig
from nnc.models.pfnr import PFNRConfig

CONFIG_CLASSES = [HNeRVConfig, NeRVConfig, NeRVPPConfig, PFNRConfig, NIRVANAConfig, CLCConfig, HiNeRVConfig]

HUGE = [10**39, -(10**39), 10**400]
HOSTILE_BY_TYPE = {
    int: [True, False, 1.5, "3", None, [1], {}, math.inf, -math.inf, *HUGE],
    float: [True, "1.0", None, [1.0], {}, math.inf, -math.inf, math.nan, *HUGE],
    str: [1, None, True, "\ud800", "x" * 10000, ["swish"], {}],
    bool: [1, 0, "true", None, 1.0, []],
    list: ["2", 2, None, {}, [], [[2]], [True], [2.0], [math.inf], [10**39], [10**400], [2] * 1000, ["\ud800"]],
}
HOSTILE_CONFIGS = [None, [], "config", 3, {"\ud800": 1}, {"no_such_field": 1}, {"x" * 5000: 1}]


def _kind(cls, name):
    kind = typing.get_type_hints(cls)[name]
    return list if typing.get_origin(kind) is list else kind


def one_line_value_error(call, *args) -> str:
    """The message of the ValueError ``call(*args)`` raises; AssertionError when it
    raises nothing, another exception type, or a message that is not one short,
    printable line (no lone surrogate may reach the terminal)."""
    try:
        call(*args)
    except ValueError as error:
        assert type(error) is ValueError, f"{type(error).__name__}: {error}"
        message = str(error)
        assert message and "\n" not in message and len(message) < 300, message
        message.encode("utf-8")
        return message
    except Exception as error:  # the point of the test: report which other type escaped
        raise AssertionError(f"{type(error).__name__} instead of ValueError: {error}") from None
    raise AssertionError("accepted")


assert_one_line_value_error = one_line_value_error


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda cls: cls.__name__)
def test_hostile_field_values_are_one_line_value_errors(cls):
    """Every field of every codec's config, every hostile value of its type (one test per
    class, the cases in a loop: 900 parametrized cases cost a minute of pytest overhead)."""
    failures = []
    cases = 0
    for item in dataclasses.fields(cls):
        for value in HOSTILE_BY_TYPE[_kind(cls, item.name)]:
            default = getattr(cls(), item.name)
            if type(value) is type(default) and value == default:  # a default is never hostile (CLC's rate_lambdas=[])
                continue
            config = dict(cls().to_dict(), **{item.name: value})
            cases += 1
            try:
                message = one_line_value_error(cls.from_dict, config)
                assert item.name in message, message
            except AssertionError as problem:
                failures.append(f"{item.name}={ascii(value)[:30]}: {problem}")
    assert cases >= 5 * len(dataclasses.fields(cls))
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("data", HOSTILE_CONFIGS, ids=lambda data: ascii(data)[:20])
def test_hostile_config_object_is_a_one_line_value_error(cls, data):
    assert_one_line_value_error(cls.from_dict, data)


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda cls: cls.__name__)
def test_every_field_is_declared_with_bounds_and_defaults_pass(cls):
    for item in dataclasses.fields(cls):
        assert item.metadata.get("nnc_bounds") is not None, f"{cls.__name__}.{item.name} has no bounds"
    config = cls()
    check_fields(config)
    # a header written by nnc reads back to the same config, through real JSON
    assert cls.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_headers_parsed_from_json_text():
    """The values as the JSON parser produces them: 1e400 is inf, big ints stay ints."""
    for text in ('{"reduce": 1e400}', '{"reduce": 1' + "0" * 400 + "}", '{"reduce": -1e400}'):
        assert_one_line_value_error(HNeRVConfig.from_dict, json.loads(text))
    for name in ("expansion", "pe_base"):
        for cls in (NeRVConfig, NeRVPPConfig, PFNRConfig):
            assert_one_line_value_error(cls.from_dict, {name: 10**39})
    assert_one_line_value_error(NIRVANAConfig.from_dict, {"w0": 10**39})
    assert_one_line_value_error(HiNeRVConfig.from_dict, {"expansions": [10**400, 4.0, 4.0, 1.0]})


def test_valid_values_still_pass():
    assert HNeRVConfig.from_dict({"reduce": 2}).reduce == 2  # an int in a float field, kept as written
    assert NeRVConfig.from_dict({"activation": "gelu", "pe_base": 1.0}).activation == "gelu"
    assert CLCConfig.from_dict({"conditioning": False}).conditioning is False
    assert PFNRConfig.from_dict({"fso_stage": 1, "strides": [5, 2, 2, 2, 2]}).fso_stage == 1


def test_cross_field_rules_still_apply():
    assert "odd" in assert_one_line_value_error(HNeRVConfig.from_dict, {"kernel_max": 4})
    assert_one_line_value_error(PFNRConfig.from_dict, {"fso_stage": 5, "strides": [5, 2, 2, 2, 2]})
    assert_one_line_value_error(PFNRConfig.from_dict, {"fso_stage": 0, "strides": [5, 2, 2, 2, 2]})
    assert_one_line_value_error(CLCConfig.from_dict, {"latent_channels": 100, "slices": 3})
    assert_one_line_value_error(NIRVANAConfig.from_dict, {"patch_size": 15})
    assert_one_line_value_error(HiNeRVConfig.from_dict, {"depths": [3, 3, 3]})


# --------------------------------------------------------------------------- media


MEDIA = VideoInfo(32, 16, 3, Fraction(25), "yuv420p", 8, "bt601", "tv").to_dict()
HOSTILE_MEDIA = {
    "width": [1e400, math.inf, "32", 32.0, True, None, 10**39, 10**400, -1, 0, 16385, [32]],
    "height": [1e400, "16", 16.5, False, 10**39, 0, 16385],
    "num_frames": [10**12, 10**400, True, "3", 3.0, 0, 10**6 + 1],
    "fps": [[1e400, 1], [10**400, 1], [25, 0], [25], "25", 25, [[25], 1], [25.0, 1], [True, 1], None, [10**6, 1]],
    "pix_fmt": ["\ud800", ["yuv420p"], {}, None, 8, "yuv421p", "x" * 10000],
    "bit_depth": [8.0, True, 10, 10**39, "8"],
    "color_matrix": [None, "\ud800", "bt601x", 1, "rgb"],
    "color_range": [None, "\ud800", "full", 0],
}


def test_hostile_media_values_are_one_line_value_errors():
    failures = []
    for name, values in HOSTILE_MEDIA.items():
        for value in values:
            try:
                one_line_value_error(VideoInfo.from_dict, dict(MEDIA, **{name: value}))
            except AssertionError as problem:
                failures.append(f"{name}={ascii(value)[:30]}: {problem}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("data", [None, [], "media", {**MEDIA, "\ud800": 1}, {**MEDIA, "x" * 5000: 1},
                                  {k: v for k, v in MEDIA.items() if k != "fps"}], ids=lambda d: ascii(d)[:20])
def test_hostile_media_object_is_a_one_line_value_error(data):
    assert_one_line_value_error(VideoInfo.from_dict, data)


def test_media_round_trip_and_limits():
    assert VideoInfo.from_dict(json.loads(json.dumps(MEDIA))).to_dict() == MEDIA
    biggest = dict(MEDIA, width=16384, height=16384, num_frames=10**6)
    assert VideoInfo.from_dict(biggest).num_frames == 10**6  # the format's limits are inclusive


@pytest.mark.parametrize("media", ["x" * 300, 3, [], {"width": "wide"}])
def test_video_set_with_a_hostile_top_level_media_is_refused_in_one_line(tmp_path, media):
    """A PFNR set keeps each video's media in its model header and writes none at the
    top; one added there (found by the fuzzer: `nnc info` crashed printing it) is checked
    like any media header, by info and decode alike."""
    from pathlib import Path

    from click.testing import CliRunner

    from nnc.bitstream import encode_bitstream, read_bitstream_file
    from nnc.cli.main import main

    golden = Path(__file__).parent / "data" / "golden_pfnr_fso3.nnc"
    bitstream = read_bitstream_file(golden)
    bitstream.header["media"] = media
    path = tmp_path / "set.nnc"
    path.write_bytes(encode_bitstream(bitstream))
    for arguments in (["info", str(path)], ["decode", str(path), "-o", str(tmp_path / "out.y4m")]):
        result = CliRunner().invoke(main, arguments)
        assert result.exit_code == 3, result.output
        [line] = result.output.strip().splitlines()
        assert line.startswith("nnc: not a valid .nnc file: bad top-level media header of a video set")
    assert not (tmp_path / "out.y4m").exists()
