"""Shared fixtures.  Simulated files are made once per session and reused."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".numba_cache"))


import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _private_unblinding_registry(tmp_path_factory):
    """No test writes to the user's registry of unblindings (~/.local/share/na64reco)."""
    old = os.environ.get("NA64RECO_REGISTRY")
    os.environ["NA64RECO_REGISTRY"] = str(tmp_path_factory.mktemp("unblinding-registry"))
    yield
    if old is None:
        os.environ.pop("NA64RECO_REGISTRY", None)
    else:
        os.environ["NA64RECO_REGISTRY"] = old
