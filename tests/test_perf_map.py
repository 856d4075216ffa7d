"""benchmarks/perf_kernels.py names numba's compiled code for perf: its map covers a kernel's code."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import numba
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("perf_kernels", ROOT / "benchmarks" / "perf_kernels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_map_holds_a_compiled_kernel_and_its_address():
    """A kernel compiled in the process (not from the disk cache) is in /tmp/perf-<pid>.map under its
    module and name, at the address of its compiled entry point, with a size up to the next entry."""
    holder = types.ModuleType("perf_map_probe")

    @numba.njit(cache=False)
    def probe_kernel(x):
        s = 0.0
        for v in x:
            s += v * v
        return s

    holder.probe_kernel = probe_kernel
    sys.modules[holder.__name__] = holder
    try:
        assert probe_kernel(np.arange(4.0)) == 14.0
        n = _module()._perf_map()
        lines = Path(f"/tmp/perf-{os.getpid()}.map").read_text().splitlines()
    finally:
        del sys.modules[holder.__name__]
        Path(f"/tmp/perf-{os.getpid()}.map").unlink(missing_ok=True)
    assert n == len(lines) > 0
    rows = [(int(a, 16), int(s, 16), name) for a, s, name in (line.split(" ", 2) for line in lines)]
    name = f"{probe_kernel.py_func.__module__}.{probe_kernel.py_func.__qualname__}"
    mine = [r for r in rows if r[2] == name]
    assert mine, name
    cres = next(iter(probe_kernel.overloads.values()))
    entry = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
    assert any(a <= entry < a + s for a, s, _ in mine)
    starts = sorted(a for a, _, _ in rows)
    assert all(b > a for a, b in zip(starts, starts[1:], strict=False))  # one entry per address
