"""Shared fixtures: the smoke synthetic datasets, generated once per test session."""
import os

import pytest

os.environ.setdefault("MECORE_PROFILE", "smoke")


@pytest.fixture(scope="session")
def smoke_root():
    from mecore.data.synthetic import ensure_synthetic

    return ensure_synthetic("smoke")
