"""Shared fixtures.  Simulated files are made once per session and reused.

The suite runs on all cores with pytest-xdist (``-n auto --dist loadgroup``, pyproject.toml).
Two rules keep that as cheap as one process and as strict:

* the tests of a module that share a module-scoped fixture (a simulated file, say) are one
  work unit (an ``xdist_group`` named after the module and the fixture, added below): the
  fixture is built once, by one worker; the other tests are spread one by one;
* session-scoped inputs (``small_na64mu_files``) are built once per run by whichever worker
  asks first, under a file lock, and read by all (:func:`_made_once`).

``pytest -n 0`` runs everything in one process, as before.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import warnings

import matplotlib
import pytest

try:
    import fcntl
except ImportError:  # not POSIX: every worker makes its own copy of the shared inputs
    fcntl = None

matplotlib.use("Agg")
# One on-disk numba cache for all workers and subprocesses: numba writes each cache file to a
# temporary name and renames it into place, so two processes compiling at once do not
# corrupt it (at worst both compile the same kernel).
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".numba_cache"))
# The runs' file check cache (na64reco.file_check_cache) of this process and its subprocesses,
# not the user's: a fresh one per test process.
os.environ["NA64RECO_CACHE_DIR"] = tempfile.mkdtemp(prefix="na64reco-check-cache-")
atexit.register(shutil.rmtree, os.environ["NA64RECO_CACHE_DIR"], ignore_errors=True)


#: Beam particles of the shared small NA64mu files (enough for every cut-flow row to be filled).
SMALL_MOT = 3000


@pytest.hookimpl(tryfirst=True)  # before xdist turns the xdist_group marks into work units
def pytest_collection_modifyitems(config, items):
    """One xdist work unit per set of tests sharing a module-scoped fixture.

    Within a module, tests that use one module-scoped fixture (directly or through another
    fixture), or two fixtures that another test uses together, are one group: each fixture
    is then built once, by one worker, and a module with two independent fixtures (two
    simulated samples, say) is two work units that can run at the same time."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def root(key):
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    shared = {}
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None or item.get_closest_marker("xdist_group") is not None:
            continue
        module = item.nodeid.split("::")[0]
        keys = [(module, name) for name, defs in info.name2fixturedefs.items()
                if defs and defs[-1].scope in ("module", "class", "package")]
        if keys:
            shared[item] = keys
            for key in keys[1:]:
                parent[root(key)] = root(keys[0])
    for item, keys in shared.items():
        module, name = root(keys[0])
        item.add_marker(pytest.mark.xdist_group(f"{module}:{name}"))


@pytest.hookimpl(tryfirst=True)  # before xdist's worker sends the collected node ids to the scheduler
def pytest_collection_finish(session):
    """Make sure every ``xdist_group`` test carries its group in its node id.

    pytest-xdist's loadgroup tells the scheduler a test's group by appending ``@group`` to
    its node id (setting ``item._nodeid``).  From pytest 9.2 the node id lives in
    ``item._id`` and that assignment is silently lost (pytest-xdist issue #1386): every test
    then becomes its own work unit and each worker rebuilds the module-scoped fixtures
    (simulations, ``na64reco`` runs) of the modules it touches.  Here the suffix is set
    where the running pytest keeps the id, unless xdist already did it."""
    if not getattr(session.config.option, "loadgroup", False):  # set by xdist on a loadgroup worker
        return
    for item in session.items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        suffix = "@" + "_".join(names)
        if not names or item.nodeid.endswith(suffix):
            continue
        nodeid = item.nodeid + suffix
        structured = getattr(item, "_id", None)  # pytest >= 9.2: a NodeId
        try:
            if structured is None:
                item._nodeid = nodeid  # older pytest (where xdist already did this)
            else:
                item._id = type(structured).parse(nodeid)
        except (AttributeError, TypeError, ValueError):
            pass
        if item.nodeid != nodeid:  # another pytest: the results stay right, the fixtures are built per worker
            warnings.warn(f"cannot put {item.nodeid!r} into its xdist group {suffix[1:]!r}: each worker will "
                          "rebuild the module fixtures it needs (slower, same results); check pytest/pytest-xdist",
                          pytest.PytestWarning, stacklevel=1)
            return


@contextlib.contextmanager
def _locked(path):
    """An exclusive lock on ``path`` across processes (none without fcntl)."""
    if fcntl is None:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _made_once(tmp_path_factory, name: str, make) -> os.PathLike:
    """``make(folder)`` once per test run, shared by all xdist workers; returns the folder.

    The first worker to ask builds it under a lock while the others wait; a build that
    failed half-way is redone from scratch.  Without xdist this is a plain session folder."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER") and fcntl is not None:
        base = base.parent  # the run's folder, above the per-worker ones
    folder = base / name
    with _locked(base / f"{name}.lock"):
        if not (folder / ".complete").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            (folder / ".complete").touch()
    return folder


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
    made once per test run (by one xdist worker): ``{"mc": Path, "data": Path}``.
    Tests must not modify them."""
    from na64reco.sim.generate import simulate

    def make(folder):
        simulate("na64mu", SMALL_MOT, 11, 1001, folder / "mc.root", truth=True)
        simulate("na64mu", SMALL_MOT, 13, 1002, folder / "data.root", truth=False)

    folder = _made_once(tmp_path_factory, "na64mu_small", make)
    return {"mc": folder / "mc.root", "data": folder / "data.root"}
