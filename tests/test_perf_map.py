"""benchmarks/perf_kernels.py names numba's compiled code for perf: its map covers a kernel's code."""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import sys
import types
from pathlib import Path

import numba
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("perf_kernels", ROOT / "benchmarks" / "perf_kernels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _mapped_probe(module_name: str):
    """(a kernel compiled in this process and held by module ``module_name``, perf_kernels,
    the lines of the map that ``_perf_map`` wrote for this process)."""
    holder = types.ModuleType(module_name)

    @numba.njit(cache=False)
    def probe_kernel(x):
        s = 0.0
        for v in x:
            s += v * v
        return s

    holder.probe_kernel = probe_kernel
    sys.modules[holder.__name__] = holder
    mod = _module()
    try:
        assert probe_kernel(np.arange(4.0)) == 14.0
        n = mod._perf_map()
        lines = Path(f"/tmp/perf-{os.getpid()}.map").read_text().splitlines()
    finally:
        del sys.modules[holder.__name__]
        Path(f"/tmp/perf-{os.getpid()}.map").unlink(missing_ok=True)
    assert n == len(lines) > 0
    return probe_kernel, mod, lines


def _entry(kernel) -> int:
    cres = next(iter(kernel.overloads.values()))
    return cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)


def test_the_map_holds_a_compiled_kernel_and_its_address():
    """A kernel compiled in the process (not from the disk cache) is in /tmp/perf-<pid>.map under its
    module and name, at the address of its compiled entry point, with a size up to the next entry."""
    probe_kernel, _, lines = _mapped_probe("perf_map_probe")
    rows = [(int(a, 16), int(s, 16), name) for a, s, name in (line.split(" ", 2) for line in lines)]
    name = f"{probe_kernel.py_func.__module__}.{probe_kernel.py_func.__qualname__}"
    mine = [r for r in rows if r[2] == name]
    assert mine, name
    entry = _entry(probe_kernel)
    assert any(a <= entry < a + s for a, s, _ in mine)
    starts = sorted(a for a, _, _ in rows)
    assert all(b > a for a, b in zip(starts, starts[1:], strict=False))  # one entry per address


def test_the_code_dump_is_the_kernel_as_it_runs_and_disassembles(tmp_path, monkeypatch):
    """With PERF_KERNELS_CODE_DIR the map's entries also leave their machine code, which objdump reads
    back as x86-64 instructions starting at the entry; the hottest-instruction listing marks the
    sampled ones with their share and keeps the address order."""
    if shutil.which("objdump") is None:
        pytest.skip("objdump (binutils) not installed")
    monkeypatch.setenv("PERF_KERNELS_CODE_DIR", str(tmp_path))
    probe_kernel, mod, _ = _mapped_probe("perf_map_probe_code")
    entry = _entry(probe_kernel)
    dumps = {int(p.stem, 16): p for p in tmp_path.glob("*.bin")}
    start = max(a for a in dumps if a <= entry)
    code = dumps[start].read_bytes()
    assert code[:16] == ctypes.string_at(start, 16)  # the bytes in memory
    insns = mod._disassemble(dumps[start], start)
    assert insns[0][0] == start and any(a == entry for a, _ in insns)
    assert any(text.startswith("ret") for _, text in insns)
    listing = mod._hot_lines(insns, {insns[1][0]: 3, insns[4][0]: 1}, 2, start)
    shares = [line for line in listing if line.split()[1:2] == ["%"]]  # (not the registers: %rax)
    assert [line.split()[0] for line in shares] == ["75.0", "25.0"]
    assert all(f"{a - start:x}" in line for line, (a, _) in zip(shares, (insns[1], insns[4]), strict=True))
