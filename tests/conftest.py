"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch

from nnc.media import Video
from synthetic import synthetic_video


@pytest.fixture
def tiny_video() -> Video:
    return synthetic_video()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny fits on a busy 2-core machine: two intra-op threads make each step up to 10x
    slower (measured), one keeps a module near a minute.  Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
