"""Shared fixtures."""

from __future__ import annotations

import pytest

from nnc.media import Video
from synthetic import synthetic_video


@pytest.fixture
def tiny_video() -> Video:
    return synthetic_video()
