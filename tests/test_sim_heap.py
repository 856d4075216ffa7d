"""The simulator's heap setting (na64reco.sim.heap): freed arrays are reused, not re-faulted."""

from __future__ import annotations

import subprocess
import sys
import tempfile

import pytest

from na64reco.sim import heap

#: code of a fresh process: ``faults(n)`` makes and frees 2 rounds of ``n`` arrays of 4 MB and returns
#: the minor page faults it took (also used by test_worker_heap.py)
FAULTS = """
import resource, sys
import numpy as np
def faults(n=20):
    a = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(2):
        xs = [np.ones(1 << 19) for _ in range(n)]
        del xs
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - a
"""

#: faults of 20 arrays counted before and after retain_freed_memory() (glibc returns these blocks to
#: the system on free)
_CHILD = FAULTS + """
faults()
before = faults()
import importlib.util
spec = importlib.util.spec_from_file_location("heap", sys.argv[1])  # the module alone: not the simulator's imports
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
ok = mod.retain_freed_memory()
faults()
print(ok, before, faults())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_arrays_are_reused_without_page_faults():
    out = subprocess.run([sys.executable, "-c", _CHILD, heap.__file__], capture_output=True, text=True, check=True,
                         cwd=tempfile.gettempdir())
    ok, before, after = out.stdout.split()
    if ok != "True":
        pytest.skip("not glibc")
    pages = 2 * 20 * (4 << 20) // 4096
    assert int(before) > pages // 4  # the blocks went back to the system and were faulted in again
    assert int(after) < pages // 100  # now reused


def test_no_glibc_changes_nothing(monkeypatch):
    heap.retain_freed_memory.cache_clear()
    monkeypatch.setattr(heap.platform, "libc_ver", lambda: ("", ""))
    try:
        assert heap.retain_freed_memory() is False
    finally:
        heap.retain_freed_memory.cache_clear()
