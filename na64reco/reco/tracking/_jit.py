"""On-disk numba caching for kernels that inline jitted functions of other modules.

numba keys a function's cache on the time stamp of the file that defines it.  A kernel
compiles the jitted functions it calls into itself, so after an edit of *their* file the
cached kernel would keep running the old code (numba documents this limitation).  Not
caching costs every process the compilation (~5 s for the hits kernel), which hurts
futures and dask workers.

:func:`njit_cached_with` caches in a directory named after the SHA-256 of the defining
file and of every module whose kernels it calls, so an edit of any of them compiles
afresh.  The choice over merging those modules into one file: the APV, de-multiplexing
and clustering layers keep their own modules, reference twins and tests.

Cache root: ``NUMBA_CACHE_DIR`` if set, else ``__pycache__`` next to the defining file,
else the temporary directory; with no writable place the kernel is not cached.  Stale
directories (earlier source versions) are never read again; delete them at will.

Literal integers.  In a compiled function, a counter that starts as ``0`` and is then passed to
another compiled function (``n = 0`` ... ``n = helper(n, ...)`` in a loop) is typed in numba's
first pass of type inference as ``Literal[int](0)``; the call is resolved, and the helper
*compiled*, for that type, and once more for ``int64`` when the loop's types are unified.  The
helper's second specialisation is never run, but a cold start pays its compile (the hits block:
~6 s of each table's ~13 s).  Such counters start as ``np.int64(0)``;
``tests/test_cold_compile.py`` checks, with :func:`duplicate_specialisations`, that no kernel of
the reconstruction or the simulation is compiled twice that way.

Inlining.  The large helpers a kernel inlines (the track search's view search and solver, the MM
de-multiplexer, the ECAL event and its shower chi2) are marked ``forceinline=True`` (:data:`INLINED`; LLVM's
``alwaysinline``: numba compiles the helper once as a function of its own, LLVM inlines it at each
call site) rather than numba's ``inline='always'``, which inlines numba's IR before type inference.
The machine code runs as fast (outputs identical; ``benchmarks/bench_kernels_ab.py`` and
``bench_reco_ab.py`` within their scatter), but numba's IR inliner deep-copies the callee's IR block
by block, every block's copy taking the callee's whole variable scope along (blocks x variables:
153 x 1591 for the view search): ~18 s of the demo's cold start, ~6 s of a process that only
reconstructs (stop 36 of issue 11, docs/performance.md).  A helper inlined that way is a function of
its own to numba: literal integer arguments compile it twice, as above, and a helper it calls
inherits ``forceinline`` (and ``_nrt``) unless it sets them.  Small helpers (``_max``,
``_has``) keep ``inline='always'``: their copies cost nothing.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import sys
import tempfile
from pathlib import Path

import numba
from numba.core import cpu, types
from numba.core.registry import CPUDispatcher

# NO_NRT: compile a helper without numba's runtime reference counting.  The helpers that take
# it allocate nothing and are called per plane or per search node on arrays their caller owns;
# with the runtime every call increments and decrements the reference count of each array
# argument (atomic operations, 12-19 % of the hits kernel in ``perf``).  ``_nrt`` is an
# underscored (not public) option of numba's CPU target: if a numba version drops it, the
# helpers compile with the runtime, slower, with the same results.
NO_NRT: dict = {"_nrt": False} if hasattr(cpu.CPUTargetOptions, "_nrt") else {}

# INLINED: a large helper inlined into its caller by LLVM (see "Inlining" above); NOT_INLINED: a helper
# compiled by one that is (it would inherit ``forceinline``) and meant to stay a call.  A numba without
# the option inlines with its IR inliner: slower to compile, the same code.
_FORCEINLINE = hasattr(cpu.CPUTargetOptions, "forceinline")
INLINED: dict = {"forceinline": True} if _FORCEINLINE else {"inline": "always"}
NOT_INLINED: dict = {"forceinline": False} if _FORCEINLINE else {}


def source_digest(*files) -> str:
    """SHA-256 (hex, 16 characters) of the contents of ``files`` in order."""
    h = hashlib.sha256()
    for f in files:
        h.update(Path(f).read_bytes())
    return h.hexdigest()[:16]


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
        return True
    except OSError:
        return False


def cache_dir_for(fn, modules) -> Path | None:
    """Cache directory of ``fn`` calling kernels of ``modules`` (None: nowhere writable)."""
    src = inspect.getsourcefile(fn)
    name = f"na64reco-{source_digest(src, *(m.__file__ for m in modules))}"
    roots = [os.environ.get("NUMBA_CACHE_DIR") or numba.config.CACHE_DIR or None,
             str(Path(src).parent / "__pycache__"),
             str(Path(tempfile.gettempdir()) / f"na64reco-numba-{os.getuid() if hasattr(os, 'getuid') else 0}")]
    for root in roots:
        if root and _writable(Path(root) / name):
            return Path(root) / name
    return None


def njit_cached_with(*modules, **options):
    """``numba.njit(cache=True, **options)`` whose cache is keyed on the sources of the
    defining module and of ``modules`` (see the module doc)."""

    def decorate(fn):
        where = cache_dir_for(fn, modules)
        if where is None:
            kernel = numba.njit(cache=False, **options)(fn)
        else:
            before = numba.config.CACHE_DIR
            numba.config.CACHE_DIR = str(where)  # read once, when caching is enabled below
            try:
                kernel = numba.njit(cache=True, **options)(fn)
            finally:
                numba.config.CACHE_DIR = before
        kernel.keyed_on = frozenset(m.__name__ for m in modules)  # (tests/test_kernel_globals.py)
        return kernel

    return decorate


def duplicate_specialisations(prefixes=("na64reco", "processors")) -> dict[str, list[list[str]]]:
    """``{module.function: [literal argument types of each redundant signature, ...]}`` over the
    compiled functions defined at module level in the loaded modules under ``prefixes``."""
    found = {}
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(prefixes):
            continue
        for obj in list(vars(module).values()):
            if not isinstance(obj, CPUDispatcher) or obj.py_func.__module__ != name:
                continue
            groups: dict[tuple, list] = {}
            for sig in obj.signatures:
                groups.setdefault(tuple(types.unliteral(a) for a in sig), []).append(sig)
            for sigs in groups.values():
                if len(sigs) > 1:
                    found[f"{name}.{obj.py_func.__qualname__}"] = [
                        [f"argument {i}: {a}" for i, a in enumerate(s) if isinstance(a, types.Literal)] for s in sigs]
    return found
