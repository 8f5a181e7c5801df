"""Fixtures for the tool tests: a tiny unconditional and a tiny conditional generator snapshot."""

from __future__ import annotations

import pytest
from tools_testutil import save_tiny_snapshot


@pytest.fixture(scope="session")
def tiny_snapshot(tmp_path_factory):
    path = tmp_path_factory.mktemp("nets") / "tiny"
    save_tiny_snapshot(path, seed=1)
    return str(path)


@pytest.fixture(scope="session")
def tiny_cond_snapshot(tmp_path_factory):
    path = tmp_path_factory.mktemp("nets") / "tiny_cond"
    save_tiny_snapshot(path, seed=2, c_dim=4)
    return str(path)
