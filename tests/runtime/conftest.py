"""Fixtures for the engine tests: one real engine per test module, with busybox pulled.

The helpers that drive it (`run`, `start_background`, ...) are in engine_helpers.py.
"""

from __future__ import annotations

import pytest

from tests.runtime.engine_helpers import make_engine


@pytest.fixture(scope="module")
def busybox(test_images) -> str:
    return test_images["busybox"]


@pytest.fixture(scope="module")
def engine(tmp_path_factory, busybox):
    eng = make_engine(tmp_path_factory.mktemp("engine"))
    eng.images.pull(busybox)
    yield eng
    eng.shutdown()
