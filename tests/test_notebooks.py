"""The notebooks in notebooks/ run (small inputs) and stay paired with their jupytext source.

Each notebook is a percent-format ``.py`` (the source under review) paired with an
``.ipynb`` committed without outputs.  The test checks the pairing, then executes the
``.ipynb`` with nbclient in a fresh kernel (the venv's python) inside a temporary working
directory, with a time-out per notebook.  ``pytest --nbmake notebooks/*.ipynb`` runs the
same notebooks through the nbmake plugin as a separate invocation.

Only notebook 06 may unblind (a demonstration on simulated data, in a temporary ledger);
the others must never create an unblinding token.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
TIMEOUT = 300  # s per cell; a whole notebook takes well under a minute
MAY_UNBLIND = {"06_limits_and_unblinding"}


def _cells(nb) -> list[tuple[str, str]]:
    """Every cell, text too: a markdown edit made in one twin only must not go unseen."""
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_there_are_notebooks():
    names = {p.stem for p in SOURCES}
    assert {"01_quickstart", "02_calibration", "03_tracking_performance", "04_na64mu_blinded_analysis",
            "05_na64e_analysis", "06_limits_and_unblinding"} <= names


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_is_paired_and_has_no_large_outputs(source):
    ipynb = source.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} missing: run `jupytext --to ipynb {source.name}`"
    py_nb, ip_nb = jupytext.read(source), jupytext.read(ipynb)
    assert _cells(py_nb) == _cells(ip_nb), (f"{ipynb.name} is out of sync with {source.name} (code or text): "
                                            f"run `jupytext --sync {source.name}`")
    assert ipynb.stat().st_size < 200_000, f"{ipynb.name}: commit it without (large) outputs"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_only_the_unblinding_notebook_unblinds(source):
    text = source.read_text()
    calls = re.findall(r"\bunblind\s*\(|UnblindingToken|unblind\s*=", text)
    if source.stem in MAY_UNBLIND:
        assert calls, "the unblinding demonstration should call unblind()"
    else:
        assert not calls, f"{source.name} must never unblind: {calls}"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_runs(source, tmp_path):
    import nbformat

    nb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    env_backup = os.environ.get("MPLBACKEND")
    os.environ.pop("MPLBACKEND", None)  # the kernel uses the inline backend: figures are shown
    client = nbclient.NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.perf_counter()
    try:
        client.execute()
    finally:
        if env_backup is not None:
            os.environ["MPLBACKEND"] = env_backup
    elapsed = time.perf_counter() - t0
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images >= 1, f"{source.stem} shows no figure"
    print(f"{source.stem}: {elapsed:.1f} s, {images} figures")
