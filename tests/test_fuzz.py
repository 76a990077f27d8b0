"""The decoder fuzzing harness (tools/fuzz_decoder.py): a short campaign, and the harness's own checks."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fuzz_decoder as fuzz  # tools/ is on pytest's pythonpath (pyproject.toml)
from nnc.bitstream.framing import read_version
from nnc.errors import NncError


@pytest.fixture(scope="module")
def seeds():
    # One clip per codec keeps this short; the campaign (tools/fuzz_decoder.py) uses all.
    built, errors = fuzz.build_seeds(0, clips=fuzz.SEED_CLIPS[:1])
    assert not errors  # every registered codec can be fuzzed
    from nnc.codec.registry import available_codecs

    assert {s["codec"] for s in built} == set(available_codecs())  # CLC and PFNR included
    assert any(s["clip"].startswith("2 videos") for s in built)  # a PFNR set of two videos
    assert any("segments" in s["clip"] for s in built)  # a segmented file (format version 3)
    assert any(read_version(s["bytes"]) == 4 for s in built)  # offsetless step tensors (NIRVANA)
    return built


def test_cases_are_reproducible(seeds):
    files = [s["bytes"] for s in seeds]
    assert fuzz.make_case(3, 17, files) == fuzz.make_case(3, 17, files)
    assert fuzz.make_case(3, 17, files)[0] != fuzz.make_case(3, 18, files)[0]


def test_short_campaign_finds_nothing(seeds):
    # No wall-clock deadline on a shared CI machine: a case fails for an error, a crash
    # or a hang (killed after 120 s), not for being slow under load.
    record = fuzz.run_campaign(240, seed=0, seeds=seeds, time_limit=60.0, kill_after=120.0)
    assert record["inputs_tried"] == 240 == record["summary"]["cases"]
    assert record["failures"] == [], json.dumps(record["failures"], indent=1)
    for structural in ("quant", "header_tree", "entropy", "tensors", "chunks", "field"):
        assert record["outcomes_by_mutation"].get(structural), structural  # each structural edit ran
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

    record = fuzz.run_campaign(0, seeds=seeds, target="_spin", time_limit=0.2, kill_after=3,
                               inputs=[(b"\x01", "1 ms"), ((400).to_bytes(2, "little"), "400 ms"),
                                       ((60000).to_bytes(2, "little"), "60 s")])
    problems = {f["mutation"]: f["problem"] for f in record["failures"]}
    assert problems == {"400 ms": "slow", "60 s": "timeout"}


def test_every_mutation_applies_to_an_intact_file(seeds):
    """A mutator that always answers Skip (or raises) would silently drop out of the
    campaign and of the hypothesis test below."""
    files = [s["bytes"] for s in seeds]
    for name, (mutate, _) in sorted(fuzz.MUTATIONS.items()):
        changed = 0
        for attempt in range(20):
            data = files[attempt % len(files)]
            try:
                mutated, what = mutate(random.Random(attempt), data, files)
            except fuzz.Skip:
                continue
            assert isinstance(mutated, bytes) and what, name
            changed += mutated != data
        assert changed >= 5, f"mutation {name} changed only {changed} of 20 intact files"


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(data=st.data())
def test_hypothesis_driven_mutations_only_raise_nnc_errors(seeds, data):
    """Hypothesis picks the seed file and a chain of the harness's mutations (so a
    failure shrinks to the shortest chain); decoding, in process, must end in frames
    or an NncError (no wall-clock deadline: the machine may be loaded; the campaign
    above bounds hangs with its worker timeout).

    A mutation that does not apply (e.g. a field edit on a file whose framing an earlier
    mutation broke) says so with ``fuzz.Skip``; any other exception from a mutator is a
    harness bug and fails here.  A chain where nothing applied is not counted (it would
    only decode the intact seed file); that every mutation does apply is checked above."""
    files = [s["bytes"] for s in seeds]
    blob = original = files[data.draw(st.integers(0, len(files) - 1), label="seed file")]
    applied = []
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        name = data.draw(st.sampled_from(sorted(fuzz.MUTATIONS)), label="mutation")
        rng = random.Random(data.draw(st.integers(0, 2**32 - 1), label="rng"))
        try:
            blob, what = fuzz.MUTATIONS[name][0](rng, blob, files)
        except fuzz.Skip:
            continue
        assert isinstance(blob, bytes) and isinstance(what, str), name
        applied.append(what)
    assume(applied and blob != original)
    try:
        fuzz.decode_all(blob)
    except NncError:
        pass
