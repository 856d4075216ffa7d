"""Where the CPU time of reconstruction or simulation goes, by compiled kernel (Linux ``perf``).

    python benchmarks/perf_kernels.py reco --file RAW.root [--chunk 50000] [--seconds 8] [--top 30]
    python benchmarks/perf_kernels.py simulate [--events 100000] [--seconds 8] [--top 30]
    python benchmarks/perf_kernels.py reco --file RAW.root --annotate _hits_kernel [--lines 40]

The stage timers of ``bench_reco.py --stages`` and ``bench_simulate.py --profile`` time Python
calls; they cannot split a numba kernel from the kernels inlined into it, nor see the operating
system's time (page faults) or the C libraries' (numpy, the compressor).  This samples the whole
process with ``perf record`` instead and names the samples in numba's compiled code:

* a child process runs the workload once with an empty numba cache directory, so that every kernel
  is compiled in the process and its code addresses are known; it writes them to
  ``/tmp/perf-<pid>.map`` (perf's map of JIT-compiled code: start, size, name), then repeats the
  workload (``reco``: ``reconstruct`` over the file's chunks of ``--chunk`` events, read into
  memory first; ``simulate``: ``simulate()`` of ``--events`` NA64mu beam muons, calibration trigger,
  written to a temporary file);
* the parent attaches ``perf record -F 2000`` to it for ``--seconds`` seconds and prints the
  share of the samples of each symbol (a numba kernel as ``module.function``, with what it inlined;
  ``[k]`` the operating system), then the shares by library.

With ``--annotate NAME`` the child also writes the machine code of every mapped function as it is in
memory, and the parent prints, for each kernel whose name contains NAME, its ``--lines`` hottest
instructions (the share of the kernel's samples on each, ``perf script``'s sample addresses) with their
neighbours, disassembled by ``objdump``: where inside a kernel the time goes, on the code that ran (no
debug build: numba's debug info also turns on bounds checks and longer variable lifetimes).

Needs ``perf`` (``linux-tools``) and permission to attach to one's own processes
(``/proc/sys/kernel/perf_event_paranoid`` <= 2 for user-space samples, <= 1 with the kernel's).
The names come from numba's code libraries (``CodeLibrary._final_module``, not a public numba
API): if a numba version changes it, the kernels show as bare addresses under ``[JIT]``.
The compile of the first run takes ~1-2 min.  A figure, not a test.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


# ---------------------------------------------------------------------------------------------
# the child: the workload, the map of its compiled code, a loop until killed
def _perf_map() -> int:
    """Write ``/tmp/perf-<pid>.map`` with every compiled overload of every numba dispatcher of the
    loaded modules; returns the number of entries.  Sizes: up to the next function's start."""
    from numba.core.registry import CPUDispatcher

    entries = []
    seen = set()
    for mod in list(sys.modules.values()):
        for obj in list(getattr(mod, "__dict__", {}).values()):
            if not isinstance(obj, CPUDispatcher) or id(obj) in seen:
                continue
            seen.add(id(obj))
            name = f"{obj.py_func.__module__}.{obj.py_func.__qualname__}"
            for cres in obj.overloads.values():
                lib = cres.library
                module = getattr(lib, "_final_module", None)
                for fn in (module.functions if module is not None else ()):
                    if fn.is_declaration:
                        continue
                    try:
                        addr = lib.get_pointer_to_function(fn.name)
                    except Exception:  # noqa: BLE001 (a symbol the engine did not keep)
                        continue
                    if addr:
                        entries.append((addr, name))
    entries = sorted(dict(reversed(entries)).items())  # one name per address (the first seen)
    code_dir = os.environ.get("PERF_KERNELS_CODE_DIR")
    with open(f"/tmp/perf-{os.getpid()}.map", "w") as f:
        for i, (addr, name) in enumerate(entries):
            size = min(entries[i + 1][0] - addr if i + 1 < len(entries) else 1 << 16, 1 << 20)
            f.write(f"{addr:x} {size:x} {name}\n")
            if code_dir:  # the machine code as it runs, for --annotate (disassembled by the parent)
                size = min(size, _mapped_until(addr) - addr)
                Path(code_dir, f"{addr:x}.bin").write_bytes(ctypes.string_at(addr, size))
    return len(entries)


def _mapped_until(addr: int) -> int:
    """The end of the memory mapping of this process that holds ``addr`` (from /proc/self/maps)."""
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                return hi
    return addr


def _reco_workload(args):
    import uproot

    from na64reco.conditions import load_conditions
    from na64reco.geometry import load_setup
    from na64reco.io.raw import assemble_events, event_branches, open_raw
    from na64reco.reco.event import reconstruct

    with open_raw(args.file) as raw:
        setup = load_setup(raw.setup, run=raw.run)
        conds = load_conditions(setup, raw.run)
    with uproot.open(args.file) as f:
        chunks = [assemble_events(a, args.file) for a in f["events"].iterate(event_branches(), step_size=args.chunk)]

    def once():
        for events in chunks:
            reconstruct(events, setup, conds)
    return once


def _simulate_workload(args):
    from na64reco.sim import simulate
    from na64reco.sim.heap import retain_freed_memory

    retain_freed_memory()  # as `na64reco simulate` does

    out = Path(tempfile.mkdtemp()) / "perf_kernels.root"

    def once():
        simulate("na64mu", args.events, 1, 1, out, chunk_size=20_000, trigger="calibration")
    return once


def _child(args) -> None:
    once = {"reco": _reco_workload, "simulate": _simulate_workload}[args.what](args)
    once()  # compiles every kernel in this process
    n = _perf_map()
    print(f"READY {n}", flush=True)
    while True:
        once()


# ---------------------------------------------------------------------------------------------
# the parent
def _report(data: Path, top: int) -> None:
    def table(sort: str) -> list[tuple[float, str]]:
        out = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children", "-q", "-g", "none",
                              "--sort", sort], capture_output=True, text=True, check=True).stdout
        rows = []
        for line in out.splitlines():
            m = re.match(r"\s*([\d.]+)%\s+(.*\S)", line)
            if m:
                rows.append((float(m.group(1)), re.sub(r"(\s+-)+$", "", re.sub(r"\s{2,}", " ", m.group(2)))))
        return rows

    print(f"share of the samples by symbol (top {top}):")
    for pct, name in table("symbol")[:top]:
        print(f"  {pct:6.2f} %  {name}")
    print("by library ([JIT]: numba's compiled code; [kernel.kallsyms]: the operating system):")
    for pct, name in table("dso")[:12]:
        print(f"  {pct:6.2f} %  {name}")


def _disassemble(code: Path, addr: int) -> list[tuple[int, str]]:
    """(address, instruction) of the machine code in ``code`` loaded at ``addr`` (``objdump``)."""
    dis = subprocess.run(["objdump", "-D", "-b", "binary", "-m", "i386:x86-64", "--no-show-raw-insn",
                          f"--adjust-vma={addr:#x}", str(code)], capture_output=True, text=True, check=True).stdout
    insns = []
    for row in dis.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s*(\S.*)", row)
        if m:
            insns.append((int(m.group(1), 16), m.group(2).strip()))
    return insns


def _hot_lines(insns: list[tuple[int, str]], hits: dict[int, int], lines: int, base: int) -> list[str]:
    """The ``lines`` instructions with the most samples (``hits``: address -> samples), each with the
    three before and the one after it, in address order; a gap as ``...``."""
    total = sum(hits.values()) or 1
    counts = [hits.get(a, 0) for a, _ in insns]
    hot = sorted(range(len(insns)), key=lambda i: -counts[i])[:lines]
    show = sorted({j for i in hot if counts[i] for j in range(max(0, i - 3), min(len(insns), i + 2))})
    out = []
    prev = None
    for i in show:
        if prev is not None and i != prev + 1:
            out.append("        ...")
        a, text = insns[i]
        mark = f"{100 * counts[i] / total:5.1f} %" if counts[i] else "       "
        out.append(f"  {mark}  {a - base:6x}  {text}")
        prev = i
    return out


def _annotate(data: Path, perf_map: Path, code_dir: Path, pattern: str, lines: int) -> None:
    """The hottest instructions of the compiled functions whose name contains ``pattern``: every sampled
    instruction address counted (``perf script``), the function's machine code as it ran disassembled
    (``objdump``), and the ``lines`` instructions with the most samples printed with their neighbours,
    in address order (offsets from the function's start).  A sample usually lands on the instruction
    after a slow one (skid)."""
    funcs = []
    for line in perf_map.read_text().splitlines():
        addr, size, name = line.split(" ", 2)
        if pattern in name:
            funcs.append((int(addr, 16), int(size, 16), name))
    if not funcs:
        print(f"--annotate {pattern!r}: no compiled function of that name")
        return
    out = subprocess.run(["perf", "script", "-i", str(data), "-F", "ip"], capture_output=True, text=True,
                         check=True).stdout
    ips = collections.Counter(int(x, 16) for x in out.split())
    total = sum(ips.values())
    for addr, size, name in funcs:
        code = code_dir / f"{addr:x}.bin"
        hits = {ip: n for ip, n in ips.items() if addr <= ip < addr + size}
        if not hits or not code.exists():
            continue
        print(f"\n{name} at {addr:#x}: {sum(hits.values())} samples ({100 * sum(hits.values()) / total:.1f} % of all)")
        print("\n".join(_hot_lines(_disassemble(code, addr), hits, lines, addr)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("reco", "simulate"))
    ap.add_argument("--file", help="raw file (reco)")
    ap.add_argument("--chunk", type=int, default=50_000)
    ap.add_argument("--events", type=int, default=100_000, help="beam muons per simulate() call")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--annotate", metavar="NAME", help="also the hottest instructions of the kernels whose name "
                    "contains NAME (e.g. _hits_kernel)")
    ap.add_argument("--lines", type=int, default=40, help="instructions shown with --annotate")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args)
        return
    if args.what == "reco" and not args.file:
        ap.error("reco needs --file RAW.root")
    if shutil.which("perf") is None:
        sys.exit("perf_kernels.py: the 'perf' command is not installed (linux-tools)")
    if args.annotate and shutil.which("objdump") is None:
        sys.exit("perf_kernels.py: --annotate needs the 'objdump' command (binutils)")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, NUMBA_CACHE_DIR=str(Path(tmp) / "numba"))  # compiled here, so named
        code_dir = Path(tmp) / "code"
        if args.annotate:
            code_dir.mkdir()
            env["PERF_KERNELS_CODE_DIR"] = str(code_dir)
        cmd = [sys.executable, __file__, *sys.argv[1:], "--child"]
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
        try:
            t0 = time.perf_counter()
            line = child.stdout.readline()
            if not line.startswith("READY"):
                sys.exit(f"perf_kernels.py: the workload ended before it was ready ({line.strip()!r})")
            print(f"{args.what}: compiled and ran once in {time.perf_counter() - t0:.0f} s; "
                  f"{line.split()[1]} compiled functions mapped; sampling {args.seconds:g} s")
            data = Path(tmp) / "perf.data"
            rec = subprocess.run(["perf", "record", "-q", "-F", "2000", "-p", str(child.pid), "-o", str(data), "--",
                                  "sleep", str(args.seconds)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True)
            if rec.returncode != 0 or not data.exists():
                sys.exit(f"perf_kernels.py: perf record failed ({rec.stderr.strip()[-300:]}); attaching to a process "
                         "needs /proc/sys/kernel/perf_event_paranoid <= 2")
            _report(data, args.top)
            if args.annotate:
                _annotate(data, Path(f"/tmp/perf-{child.pid}.map"), code_dir, args.annotate, args.lines)
        finally:
            child.kill()
            child.wait()
            Path(f"/tmp/perf-{child.pid}.map").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
