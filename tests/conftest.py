"""Shared fixtures.  Simulated files are made once per session and reused."""

from __future__ import annotations

import os

import matplotlib
import pytest

matplotlib.use("Agg")
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".numba_cache"))



#: Beam particles of the shared small NA64mu files (enough for every cut-flow row to be filled).
SMALL_MOT = 3000


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


@pytest.fixture(scope="session")
def small_na64mu_files(tmp_path_factory):
    """A small simulated NA64mu run (truth: MC) and a data-like one (``--no-truth``),
    made once per session: ``{"mc": Path, "data": Path}``.  Tests must not modify them."""
    from na64reco.sim.generate import simulate

    folder = tmp_path_factory.mktemp("na64mu_small")
    files = {"mc": folder / "mc.root", "data": folder / "data.root"}
    simulate("na64mu", SMALL_MOT, 11, 1001, files["mc"], truth=True)
    simulate("na64mu", SMALL_MOT, 13, 1002, files["data"], truth=False)
    return files
