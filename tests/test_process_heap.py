"""The processes that are the library's own keep freed memory in their heap (na64reco.sim.heap):
a ``na64reco`` command's process and the futures executor's pool processes, so that each chunk's
arrays reuse the previous chunk's memory instead of being faulted in afresh."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from contextlib import ExitStack

import pytest
from test_sim_heap import FAULTS

from na64reco.runner import RunOptions, _Workers

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

#: minor page faults of FAULTS' two rounds of 20 arrays of 4 MB, if nothing is reused
PAGES = 2 * 20 * (4 << 20) // 4096

#: faults of 20 arrays in a fresh process, then again after a command ran through the CLI's main()
_CLI_CHILD = FAULTS + """
from na64reco.sim.heap import retain_freed_memory
from na64reco import cli
faults()
before = faults()
code = cli.main(["inspect", "/nonexistent/run.root"])  # fails at once (exit 1): the setting comes first
faults()
print(code, retain_freed_memory(), before, faults())
"""


@linux_only
def test_a_command_process_reuses_freed_arrays():
    out = subprocess.run([sys.executable, "-c", _CLI_CHILD], capture_output=True, text=True, check=True,
                         cwd=tempfile.gettempdir())
    code, ok, before, after = out.stdout.split()
    if ok != "True":
        pytest.skip("not glibc")
    assert code == "1"
    assert int(before) > PAGES // 4  # glibc's defaults: the blocks went back to the system
    assert int(after) < PAGES // 100  # the command's process keeps them


def _pool_faults():
    """FAULTS run in the calling process (a pool process): (faults of a first round, of a second)."""
    scope: dict = {}
    exec(FAULTS, scope)
    return scope["faults"](), scope["faults"]()


@linux_only
def test_the_futures_pool_processes_reuse_freed_arrays():
    opts = RunOptions("na64mu_invisible", executor="futures", workers=1)
    with ExitStack() as stack:
        _, second = _Workers(opts, stack).pool().submit(_pool_faults).result()  # (the first round grows the heap)
    assert second < PAGES // 100
