"""The decoder fuzzing harness (nnc.codec.fuzz): a short campaign, and the harness's own checks."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnc.codec import fuzz
from nnc.errors import NncError


@pytest.fixture(scope="module")
def seeds():
    # One clip per codec keeps this short; the campaign (python -m nnc.codec.fuzz) uses all.
    built, errors = fuzz.build_seeds(0, clips=fuzz.SEED_CLIPS[:1])
    assert not errors  # every registered codec can be fuzzed
    assert "hnerv" in {s["codec"] for s in built}
    return built


def test_cases_are_reproducible(seeds):
    files = [s["bytes"] for s in seeds]
    assert fuzz.make_case(3, 17, files) == fuzz.make_case(3, 17, files)
    assert fuzz.make_case(3, 17, files)[0] != fuzz.make_case(3, 18, files)[0]


def test_short_campaign_finds_nothing(seeds):
    record = fuzz.run_campaign(100, seed=0, seeds=seeds, time_limit=1.0)
    assert record["inputs_tried"] == 100
    assert record["failures"] == [], json.dumps(record["failures"], indent=1)
    # Both ends are exercised: inputs that still decode, inputs that are refused.
    assert record["outcomes"].get("decoded", 0) > 5
    assert record["outcomes"].get("rejected", 0) > 40
    json.dumps(record)


def test_harness_reports_unbounded_allocation_and_slowness(seeds):
    huge = (8 << 30).to_bytes(8, "little")
    record = fuzz.run_campaign(0, seeds=seeds, target="_allocate_unchecked", memory_mib=256,
                               inputs=[(huge, "allocate 8 GiB"), ((1 << 20).to_bytes(8, "little"), "allocate 1 MiB")])
    assert record["inputs_tried"] == 2
    [failure] = record["failures"]
    assert failure["mutation"] == "allocate 8 GiB" and failure["problem"] == "crash"
    assert "MemoryError" in failure["error"]

    record = fuzz.run_campaign(0, seeds=seeds, target="_sleep", time_limit=0.2, kill_after=3,
                               inputs=[(b"\x01", "1 ms"), ((400).to_bytes(2, "little"), "400 ms"),
                                       ((60000).to_bytes(2, "little"), "60 s")])
    problems = {f["mutation"]: f["problem"] for f in record["failures"]}
    assert problems == {"400 ms": "slow", "60 s": "timeout"}


@settings(max_examples=60, deadline=1000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
          derandomize=True)
@given(data=st.data())
def test_hypothesis_driven_mutations_only_raise_nnc_errors(seeds, data):
    """Hypothesis picks the seed file and a chain of the harness's mutations (so a
    failure shrinks to the shortest chain); decoding, in process, must end in frames
    or an NncError within the 1 s deadline."""
    files = [s["bytes"] for s in seeds]
    blob = files[data.draw(st.integers(0, len(files) - 1), label="seed file")]
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        name = data.draw(st.sampled_from(sorted(fuzz.MUTATIONS)), label="mutation")
        rng = random.Random(data.draw(st.integers(0, 2**32 - 1), label="rng"))
        try:
            blob, _ = fuzz.MUTATIONS[name][0](rng, blob, files)
        except fuzz.Skip:
            continue
        except Exception:  # a structural mutation on an already broken file: not a decoder finding
            continue
    try:
        fuzz.decode_all(blob)
    except NncError:
        pass
