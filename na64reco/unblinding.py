"""Freeze an analysis, then open its signal box once, on the record.

The procedure (``docs/unblinding.md``):

1. Tune cuts on MC and on the sidebands of blinded data.
2. :func:`freeze` writes a *ledger*: hashes of everything that defines the result --
   selection file, calibration tag with every conditions file it can resolve to and the
   detector setup, library and processor source code, processor name and options, and
   every input file (size and SHA-256).  A ledger is never overwritten.
3. :func:`unblind` recomputes that state and refuses, naming each difference, unless it
   equals the frozen one; it requires an explicit confirmation, issues the
   :class:`~na64reco.selection.blinding.UnblindingToken` (this module's validator is the
   only one that accepts a ledger, and only while :func:`unblind` is issuing it), runs
   the processor unblinded, writes counts and plots, and appends a record to an
   append-only audit log (JSON lines).  A frozen state that was unblinded before is not
   run again: the recorded result is returned.

Hashes are SHA-256 over file contents; the state hash is SHA-256 of the canonical JSON
(sorted keys) of the state.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import hashlib
import json
import os
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from na64reco import __version__
from na64reco.errors import BlindingError, ConfigError, NA64Error, RawFormatError
from na64reco.io import location
from na64reco.selection.blinding import unblinding_lock_path

LEDGER_FORMAT = "na64reco-ledger"
LEDGER_VERSION = 1
AUDIT_FORMAT = "na64reco-unblinding"
DEFAULT_AUDIT_NAME = "unblinding_audit.jsonl"
#: Processor options a ledger may fix (fields of :class:`na64reco.runner.RunOptions`).
RUN_OPTIONS = ("executor", "workers", "chunksize", "skip_bad_files", "retries", "scheduler")
#: File types of the code that count as "the code" (besides calib/ and selections/).
CODE_SUFFIXES = (".py", ".yaml", ".yml", ".json")
_CHUNK = 1 << 20


# ----------------------------------------------------------------------------------------
# hashing
def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's content (hex); ``path`` may be a URL (see :mod:`na64reco.io.location`)."""
    h = hashlib.sha256()
    with location.open_bytes(path) as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def state_hash(state: dict) -> str:
    """SHA-256 of the canonical JSON of an analysis state."""
    return hashlib.sha256(canonical_json(state).encode()).hexdigest()


def _tree_hashes(root: Path, *, exclude: Iterable[str] = ()) -> dict[str, str]:
    """Relative path -> SHA-256 of every code file under ``root`` (no caches, no data)."""
    skip = set(exclude) | {"__pycache__", ".numba_cache", "_data"}
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in skip or part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and path.suffix in CODE_SUFFIXES:
            out[rel.as_posix()] = sha256_file(path)
    return out


def code_roots() -> dict[str, Path]:
    """The packages whose source defines the analysis: ``na64reco`` and ``processors``."""
    import importlib.util

    roots = {"na64reco": Path(__file__).resolve().parent}
    spec = importlib.util.find_spec("processors")
    if spec is not None and spec.submodule_search_locations:
        roots["processors"] = Path(list(spec.submodule_search_locations)[0]).resolve()
    return roots


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def code_state(roots: dict[str, Path] | None = None) -> dict:
    """Version, git commit (if any) and per-file source hashes of the analysis code."""
    roots = roots or code_roots()
    files = {}
    for name, root in roots.items():
        for rel, digest in _tree_hashes(root).items():
            files[f"{name}/{rel}"] = digest
    repo = roots["na64reco"].parent
    commit = _git(["rev-parse", "HEAD"], repo)
    return {
        "version": __version__,
        "git_commit": commit,
        "source_sha256": state_hash(files),
        "source_files": files,
    }


def calibration_state(tag: str, root: Path | None = None) -> dict:
    """The tag file, the setup file and every conditions file the tag can resolve to."""
    from na64reco.conditions import load_tag, tag_path
    from na64reco.resources import calib_dir

    root = Path(root) if root else calib_dir()
    node = load_tag(tag, root)
    setup = node.data["setup"]
    conditions = {}
    for payload, rels in node.data["payloads"].items():
        for rel in rels:
            path = root / "conditions" / rel
            if not path.is_file():
                raise ConfigError(f"calibration tag {tag!r}: {payload} file {path} does not exist")
            conditions[rel] = sha256_file(path)
    setup_file = root / "setups" / f"{setup}.yaml"
    return {
        "tag": tag,
        "root": str(root.resolve()),
        "tag_sha256": sha256_file(tag_path(tag, root)),
        "setup": setup,
        "setup_sha256": sha256_file(setup_file) if setup_file.is_file() else None,
        "conditions": conditions,
    }


def files_state(files: Iterable[str | Path], *, missing_ok: bool = False) -> list[dict]:
    """Sorted ``[{path, size, sha256}]`` of the input files (absolute paths).

    ``missing_ok`` leaves out files that do not exist (to report them as removed).
    """
    out = []
    for f in sorted({location.resolve(f) for f in files}):
        try:
            info = location.file_info(f)
        except RawFormatError as exc:
            if missing_ok:
                continue
            gone = str(exc).endswith("file not found")
            raise NA64Error(f"input file {f} does not exist" if gone else f"input file {exc}") from None
        out.append({"path": f, "size": info.size, "sha256": sha256_file(f)})
    if not out and not missing_ok:
        raise ConfigError("no input files: a frozen analysis needs the files it will unblind")
    return out


def _processor_info(name: str, selection: str | None) -> tuple[str, Path]:
    """The processor's setup and the path of the selection it will use."""
    from na64reco.selection.schema import selection_path
    from processors import get_processor

    cls = get_processor(name)
    return cls.SETUP, selection_path(selection or cls.SELECTION).resolve()


def check_options(options: dict | None) -> dict:
    options = dict(options or {})
    unknown = sorted(set(options) - set(RUN_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown processor option(s) {unknown}; allowed: {', '.join(RUN_OPTIONS)}")
    return options


def analysis_state(*, processor: str, calib_tag: str, files: Iterable[str | Path],
                   selection: str | None = None, options: dict | None = None,
                   calib_root: Path | None = None, roots: dict[str, Path] | None = None,
                   missing_ok: bool = False) -> dict:
    """Everything that defines the result of running ``processor`` over ``files``."""
    from na64reco.selection.schema import load_selection

    setup, sel_path = _processor_info(processor, selection)
    if not sel_path.is_file():
        raise ConfigError(f"selection file {sel_path} does not exist")
    sel = load_selection(sel_path)  # must be valid to be frozen
    if sel.setup != setup:
        raise ConfigError(f"{sel_path}: selection is for {sel.setup!r}, processor {processor} needs {setup!r}")
    cal = calibration_state(calib_tag, calib_root)
    if cal["setup"] != setup:
        raise ConfigError(f"calibration tag {calib_tag!r} is for setup {cal['setup']!r}, "
                          f"processor {processor} needs {setup!r}")
    return {
        "processor": {"name": processor, "setup": setup, "options": check_options(options)},
        "selection": {"path": str(sel_path), "sha256": sel.sha256, "name": sel.name},
        "calibration": cal,
        "code": code_state(roots),
        "files": files_state(files, missing_ok=missing_ok),
    }


# ----------------------------------------------------------------------------------------
# differences
@dataclass(frozen=True)
class Difference:
    """One way the current state differs from the frozen one."""

    what: str      # processor, selection, calibration, code, file list, file content
    message: str
    blocking: bool = True

    def __str__(self) -> str:
        return f"{self.what} changed: {self.message}" + ("" if self.blocking else " (not blocking)")


def _short(h: str | None) -> str:
    return (h or "none")[:12]


def diff_states(frozen: dict, current: dict) -> list[Difference]:
    """Every difference between two analysis states, most important first."""
    out: list[Difference] = []
    fp, cp = frozen["processor"], current["processor"]
    for key in ("name", "setup", "options"):
        if fp.get(key) != cp.get(key):
            out.append(Difference("processor", f"{key} {fp.get(key)!r} -> {cp.get(key)!r}"))

    fs, cs = frozen["selection"], current["selection"]
    if fs["path"] != cs["path"]:
        out.append(Difference("selection", f"file {fs['path']} -> {cs['path']}"))
    if fs["sha256"] != cs["sha256"]:
        out.append(Difference("selection", f"{cs['path']} content sha256 {_short(fs['sha256'])} -> "
                                           f"{_short(cs['sha256'])}"))

    fc, cc = frozen["calibration"], current["calibration"]
    for key, label in (("tag", "tag"), ("root", "calibration directory"), ("setup", "setup")):
        if fc[key] != cc[key]:
            out.append(Difference("calibration", f"{label} {fc[key]!r} -> {cc[key]!r}"))
    if fc["tag_sha256"] != cc["tag_sha256"]:
        out.append(Difference("calibration", f"tag file of {cc['tag']!r} was edited "
                                             f"({_short(fc['tag_sha256'])} -> {_short(cc['tag_sha256'])})"))
    if fc["setup_sha256"] != cc["setup_sha256"]:
        out.append(Difference("calibration", f"detector setup file setups/{cc['setup']}.yaml was edited"))
    for rel in sorted(set(fc["conditions"]) | set(cc["conditions"])):
        a, b = fc["conditions"].get(rel), cc["conditions"].get(rel)
        if a is None:
            out.append(Difference("calibration", f"conditions file {rel} added to the tag"))
        elif b is None:
            out.append(Difference("calibration", f"conditions file {rel} removed from the tag"))
        elif a != b:
            out.append(Difference("calibration", f"conditions file {rel} was edited "
                                                 f"({_short(a)} -> {_short(b)})"))

    fk, ck = frozen["code"], current["code"]
    if fk["version"] != ck["version"]:
        out.append(Difference("code", f"na64reco version {fk['version']} -> {ck['version']}"))
    if fk["source_sha256"] != ck["source_sha256"]:
        ff, cf = fk["source_files"], ck["source_files"]
        parts = [f"{p} modified" for p in sorted(set(ff) & set(cf)) if ff[p] != cf[p]]
        parts += [f"{p} added" for p in sorted(set(cf) - set(ff))]
        parts += [f"{p} removed" for p in sorted(set(ff) - set(cf))]
        out.append(Difference("code", "source " + ", ".join(parts)))
    elif fk.get("git_commit") != ck.get("git_commit"):
        # identical library/processor sources: only files outside the analysis code moved
        out.append(Difference("code", f"git commit {_short(fk.get('git_commit'))} -> "
                                      f"{_short(ck.get('git_commit'))} with identical analysis "
                                      "sources", blocking=False))

    ff = {f["path"]: f for f in frozen["files"]}
    cf = {f["path"]: f for f in current["files"]}
    added, removed = sorted(set(cf) - set(ff)), sorted(set(ff) - set(cf))
    if added or removed:
        msg = "; ".join([f"added {p}" for p in added] + [f"removed {p}" for p in removed])
        out.append(Difference("file list", msg))
    for p in sorted(set(ff) & set(cf)):
        a, b = ff[p], cf[p]
        if a["size"] != b["size"] or a["sha256"] != b["sha256"]:
            out.append(Difference("file content", f"{p}: size {a['size']} -> {b['size']} bytes, "
                                                  f"sha256 {_short(a['sha256'])} -> {_short(b['sha256'])}"))
    return out


# ----------------------------------------------------------------------------------------
# ledger
def _utcnow() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _ledger_body_hash(ledger: dict) -> str:
    return state_hash({k: v for k, v in ledger.items() if k != "ledger_sha256"})


def make_ledger(state: dict, *, supersedes: list[dict] | None = None, note: str = "") -> dict:
    ledger = {
        "format": LEDGER_FORMAT,
        "ledger_version": LEDGER_VERSION,
        "frozen_at": _utcnow(),
        "frozen_by": getpass.getuser(),
        "note": note,
        "supersedes": supersedes or [],
        "state": state,
        "state_sha256": state_hash(state),
    }
    ledger["ledger_sha256"] = _ledger_body_hash(ledger)
    return ledger


def read_ledger(path: str | Path) -> dict:
    """Read a ledger and check that it was not edited since it was frozen."""
    path = Path(path)
    try:
        ledger = json.loads(path.read_text())
    except FileNotFoundError:
        raise BlindingError(f"ledger {path} does not exist (freeze the analysis first: "
                            "na64reco freeze ...)") from None
    except json.JSONDecodeError as exc:
        raise BlindingError(f"ledger {path} is not valid JSON ({exc})") from None
    if not isinstance(ledger, dict) or ledger.get("format") != LEDGER_FORMAT:
        raise BlindingError(f"{path} is not an na64reco ledger (format {LEDGER_FORMAT!r} expected)")
    if ledger.get("ledger_version") != LEDGER_VERSION:
        raise BlindingError(f"ledger {path}: version {ledger.get('ledger_version')!r}, "
                            f"this na64reco reads version {LEDGER_VERSION}")
    if (not isinstance(ledger.get("state"), dict) or ledger.get("state_sha256") != state_hash(ledger["state"])
            or ledger.get("ledger_sha256") != _ledger_body_hash(ledger)):
        raise BlindingError(f"ledger {path} was edited after it was frozen (its hashes do not match "
                            "its content): freeze again into a new ledger")
    return ledger


def _same_dataset(a: dict, b: dict) -> bool:
    return (a["processor"]["name"] == b["processor"]["name"]
            and [f["path"] for f in a["files"]] == [f["path"] for f in b["files"]])


def freeze(ledger_path: str | Path, *, processor: str, calib_tag: str, files: Iterable[str | Path],
           selection: str | None = None, options: dict | None = None, force_new: bool = False,
           note: str = "", calib_root: Path | None = None,
           roots: dict[str, Path] | None = None) -> dict:
    """Record the analysis state in a new ledger file; return the ledger.

    An existing ledger is never overwritten.  If another ledger in the same directory
    froze the same processor and files, freezing again is re-tuning: it needs
    ``force_new`` and the new ledger lists the old ones under ``supersedes``.
    """
    ledger_path = Path(ledger_path)
    if ledger_path.exists():
        raise BlindingError(f"{ledger_path} exists: a frozen ledger is never overwritten; freeze into "
                            "a new file (--force-new --ledger NEW.json) if the analysis really changed")
    state = analysis_state(processor=processor, calib_tag=calib_tag, files=files, selection=selection,
                           options=options, calib_root=calib_root, roots=roots)
    earlier = []
    for other in sorted(ledger_path.resolve().parent.glob("*.json")):
        try:
            old = read_ledger(other)
        except BlindingError:
            continue
        if _same_dataset(old["state"], state):
            earlier.append({"ledger": str(other), "state_sha256": old["state_sha256"],
                            "frozen_at": old["frozen_at"]})
    if earlier and not force_new:
        names = ", ".join(e["ledger"] for e in earlier)
        raise BlindingError(f"{names} already froze {processor} on these files; freezing again is "
                            "re-tuning the analysis: use --force-new to record that the new ledger "
                            "supersedes it")
    ledger = make_ledger(state, supersedes=earlier, note=note)
    ledger_path.parent.mkdir(parents=True, exist_ok=True)
    with open(ledger_path, "x") as fh:  # "x": never overwrite
        json.dump(ledger, fh, indent=1, sort_keys=True)
        fh.write("\n")
    return ledger


def verify(ledger_path: str | Path, *, roots: dict[str, Path] | None = None) -> tuple[dict, dict, list[Difference]]:
    """Read the ledger, recompute the state; return ``(ledger, current, differences)``.

    The current state is what a run would use now: the calibration directory is the one
    the processor would read (``calib_dir()``, i.e. ``NA64RECO_CALIB`` or the checkout),
    not the one recorded in the ledger, so pointing it elsewhere is a difference.
    """
    ledger = read_ledger(ledger_path)
    frozen = ledger["state"]
    fp = frozen["processor"]
    try:
        current = analysis_state(
            processor=fp["name"], calib_tag=frozen["calibration"]["tag"],
            files=[f["path"] for f in frozen["files"]], selection=frozen["selection"]["path"],
            options=fp["options"], calib_root=None, roots=roots, missing_ok=True)
    except ConfigError as exc:
        raise BlindingError(f"ledger {ledger_path}: the frozen analysis cannot be rebuilt: {exc}") from None
    except NA64Error as exc:
        raise BlindingError(f"ledger {ledger_path}: {exc}") from None
    return ledger, current, diff_states(frozen, current)


# ----------------------------------------------------------------------------------------
# audit log
def default_audit_log(ledger_path: str | Path) -> Path:
    return Path(ledger_path).resolve().parent / DEFAULT_AUDIT_NAME


def read_audit_log(path: str | Path) -> list[dict]:
    """Records of an audit log (a missing log has none); malformed lines are an error."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise NA64Error(f"audit log {path} line {i} is not JSON: the log was tampered with") from None
    return records


def append_audit_record(path: str | Path, record: dict) -> None:
    """Append one JSON line (the log is opened in append mode only, never rewritten)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, default=_json_default) + "\n"
    with open(path, "a") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def previous_unblinding(state_sha256: str, logs: Iterable[str | Path]) -> dict | None:
    """The first recorded unblinding of ``state_sha256`` in any of ``logs``, if any."""
    for log in logs:
        for rec in read_audit_log(log):
            if rec.get("format") == AUDIT_FORMAT and rec.get("state_sha256") == state_sha256:
                return rec
    return None


def _json_default(obj):
    if isinstance(obj, set):
        return sorted(obj)
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


# ----------------------------------------------------------------------------------------
# the token
_AUTH = threading.local()


def _validate_ledger(ledger_path: str, selection) -> dict:
    """Ledger validator of :class:`UnblindingToken`: accepts only what :func:`unblind` issues."""
    pending = getattr(_AUTH, "pending", None)
    if pending is None or pending["ledger"] != str(Path(ledger_path).resolve()):
        raise BlindingError(f"ledger {ledger_path}: tokens are issued only by "
                            "na64reco.unblinding.unblind() (na64reco unblind), after the frozen "
                            "state was verified and the unblinding confirmed")
    ledger = read_ledger(ledger_path)
    if ledger["state_sha256"] != pending["state_sha256"]:
        raise BlindingError(f"ledger {ledger_path} changed while it was being unblinded")
    if selection.sha256 != ledger["state"]["selection"]["sha256"]:
        raise BlindingError(f"selection {selection.source} (sha256 {_short(selection.sha256)}) is not the "
                            f"frozen one ({_short(ledger['state']['selection']['sha256'])})")
    _AUTH.pending = None  # one token per verified request
    return {"state_sha256": ledger["state_sha256"], "ledger_sha256": ledger["ledger_sha256"],
            "issued_at": _utcnow(), "user": getpass.getuser()}


def _register() -> None:
    from na64reco.selection.blinding import register_ledger_validator

    register_ledger_validator(_validate_ledger)


def _issue_token(ledger_path: Path, ledger: dict, selection):
    from na64reco.selection.blinding import UnblindingToken

    _register()
    _AUTH.pending = {"ledger": str(Path(ledger_path).resolve()), "state_sha256": ledger["state_sha256"]}
    try:
        return UnblindingToken.from_ledger(str(Path(ledger_path).resolve()), selection)
    finally:
        _AUTH.pending = None


# ----------------------------------------------------------------------------------------
# unblinding
@dataclass
class UnblindingResult:
    """What :func:`unblind` returns: the recorded counts and whether this call ran."""

    record: dict
    ran: bool            # False: the state was unblinded before, ``record`` is that record
    output_dir: Path | None = None
    changed_since: list[str] = field(default_factory=list)  # differences found now (ran=False)

    @property
    def observed(self) -> int:
        return int(self.record["result"]["signal_box"]["events"])


def _result_from_output(out: dict) -> dict:
    """Counts of the unblinded run: signal box and sidebands per dataset and in total."""
    datasets = {}
    for name, acc in out.items():
        if "regions" not in acc:
            datasets[name] = {"events_processed": 0}
            continue
        prov = acc["provenance"]
        regions = {k: v.to_dict() for k, v in acc["regions"].items()}
        datasets[name] = {"regions": regions, "n_beam": int(prov.n_beam),
                          "events_processed": int(prov.events_processed),
                          "events_skipped": int(prov.events_skipped),
                          "unblinded_by": prov.unblinded_by}
    from na64reco.selection.cuts import BLINDED, BOX

    total: dict[str, dict] = {}
    for d in datasets.values():
        for region, r in d.get("regions", {}).items():
            if r["events"] == BLINDED:
                raise BlindingError(f"region {region} is still blinded after unblinding: the processor "
                                    "did not accept the token")
            t = total.setdefault(region, {"events": 0})
            t["events"] += int(r["events"])
    return {"signal_box": total.get(BOX, {"events": 0}),
            "sidebands": {k: v for k, v in total.items() if k != BOX},
            "n_beam": sum(d.get("n_beam", 0) for d in datasets.values()),
            "datasets": datasets}


def run_unblinded(ledger: dict, token, output_dir: Path | None) -> dict:
    """Run the frozen processor with ``token`` over the frozen files; write outputs."""
    from na64reco.runner import RunOptions, make_processor, run_files, save_outputs

    st = ledger["state"]
    opts = RunOptions(processor=st["processor"]["name"], calib_tag=st["calibration"]["tag"],
                      selection=st["selection"]["path"], **st["processor"]["options"])
    proc = make_processor(opts, unblind=token)
    out = run_files({"unblinded": [f["path"] for f in st["files"]]}, opts, processor_instance=proc)
    result = _result_from_output(out)
    if output_dir is not None:
        save_outputs(out, output_dir, plots=False)  # output.coffea, hists.root, cut-flow, provenance
        _final_plots(out, st, output_dir / "plots")
    return result


def _final_plots(out: dict, state: dict, plot_dir: Path) -> None:
    """Unblinded cut-flow, N-1 of each cut, and the box variable with box and sidebands."""
    import matplotlib.pyplot as plt
    import mplhep

    from na64reco.plotting import plot_cutflow, plot_hist1d
    from na64reco.selection.cuts import BOX
    from na64reco.selection.schema import load_selection

    sel = load_selection(state["selection"]["path"])
    plot_dir.mkdir(parents=True, exist_ok=True)
    for dataset, acc in out.items():
        h = acc.get("nminus1", {}).get(BOX)
        if h is None:
            continue
        plot_cutflow(acc["cutflow"], f"{dataset}: cut-flow (unblinded)", plot_dir / f"{dataset}_cutflow.png")
        for name, hn in acc["nminus1"].items():
            if name == BOX:
                continue
            cut = sel.cut(name)
            lo, hi = (cut.value, cut.value + 1) if cut.type == "equal" else (cut.min, cut.max)
            if "module" in hn.axes.name:
                hn = hn.project(hn.axes[-1].name)
            plot_hist1d(hn, f"{dataset}: N-1 {name} ({cut.variable}), unblinded",
                        plot_dir / f"{dataset}_nminus1_{name}.png", lo=lo, hi=hi)
        fig, ax = plt.subplots(figsize=(7, 5))
        mplhep.histplot(h, ax=ax, histtype="errorbar", color="k", label="data (unblinded)")
        box = sel.signal_box
        lo = box.min if box.min is not None else h.axes[0].edges[0]
        hi = box.max if box.max is not None else h.axes[0].edges[-1]
        ax.axvspan(lo, hi, color="tab:red", alpha=0.15, label=f"signal box ({box.text})")
        for sb in sel.sidebands:
            if sb.fails is None and sb.variable == box.variable:
                ax.axvspan(sb.min if sb.min is not None else lo, sb.max if sb.max is not None else hi,
                           color="tab:blue", alpha=0.1, label=f"sideband {sb.name}")
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.5)
        ax.set_xlabel(h.axes[0].label)
        ax.set_ylabel("events")
        ax.set_title(f"{state['processor']['name']}: {dataset}, unblinded "
                     f"(state {state_hash(state)[:12]})", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(plot_dir / f"{dataset}_unblinded_{box.variable}.png", dpi=100)
        plt.close(fig)


def unblind(ledger_path: str | Path, *, confirm: bool, output_dir: str | Path | None = None,
            audit_log: str | Path | None = None, roots: dict[str, Path] | None = None, runner=None) -> UnblindingResult:
    """Open the signal box of a frozen analysis, once, on the record.

    Refuses (:class:`BlindingError`) without ``confirm``, if the ledger was edited, or if
    the current state differs from the frozen one (each difference is named).  If the
    frozen state was unblinded before (in ``audit_log`` or the default log beside the
    ledger), returns that record without running (differences found now are listed in
    ``changed_since``, never acted upon).  Otherwise runs the processor with the
    token, writes outputs to ``output_dir`` and appends the record to the audit log(s).
    ``runner(ledger, token, output_dir) -> result`` replaces :func:`run_unblinded` (tests).
    """
    if not confirm:
        raise BlindingError("unblinding opens the signal box for good: confirm with "
                            "--i-understand-this-opens-the-box")
    ledger_path = Path(ledger_path).resolve()
    frozen = read_ledger(ledger_path)
    logs = [default_audit_log(ledger_path)]
    if audit_log is not None and Path(audit_log).resolve() != logs[0]:
        logs.insert(0, Path(audit_log).resolve())
    earlier = previous_unblinding(frozen["state_sha256"], logs)
    ledger, current, diffs = verify(ledger_path, roots=roots)
    blocking = [d for d in diffs if d.blocking]
    if earlier is not None:  # on the record already: show it, never re-run
        return UnblindingResult(earlier, ran=False, output_dir=None,
                                changed_since=[str(d) for d in blocking])
    if blocking:
        raise BlindingError(f"the analysis differs from the frozen state in {ledger_path.name} "
                            f"(frozen {ledger['frozen_at']} by {ledger['frozen_by']}): "
                            + "; ".join(str(d) for d in blocking))

    lock = unblinding_lock_path(ledger_path, ledger["state_sha256"])  # per frozen state
    try:
        with open(lock, "x") as fh:  # one unblinding of a ledger at a time
            fh.write(f"{getpass.getuser()} {_utcnow()} pid {os.getpid()}\n")
    except FileExistsError:
        raise BlindingError(f"an unblinding of this frozen state is in progress ({lock} exists: "
                            f"{lock.read_text().strip()}); remove the lock only if that run died") from None
    try:
        earlier = previous_unblinding(ledger["state_sha256"], logs)  # again, under the lock
        if earlier is not None:
            return UnblindingResult(earlier, ran=False, output_dir=None)
        return _unblind_locked(ledger_path, ledger, current, diffs, logs, output_dir, runner)
    finally:
        lock.unlink(missing_ok=True)


def _unblind_locked(ledger_path, ledger, current, diffs, logs, output_dir, runner) -> UnblindingResult:
    from na64reco.selection.schema import load_selection

    selection = load_selection(ledger["state"]["selection"]["path"])
    token = _issue_token(ledger_path, ledger, selection)
    out_dir = Path(output_dir) if output_dir is not None else None
    result = (runner or run_unblinded)(ledger, token, out_dir)
    record = {
        "format": AUDIT_FORMAT,
        "user": getpass.getuser(),
        "time_utc": _utcnow(),
        "ledger": str(ledger_path),
        "ledger_sha256": ledger["ledger_sha256"],
        "state_sha256": ledger["state_sha256"],
        "processor": ledger["state"]["processor"]["name"],
        "selection_sha256": ledger["state"]["selection"]["sha256"],
        "calib_tag": ledger["state"]["calibration"]["tag"],
        "code_version": ledger["state"]["code"]["version"],
        "git_commit": current["code"].get("git_commit"),
        "notes": [str(d) for d in diffs],
        "output_dir": str(out_dir.resolve()) if out_dir else None,
        "result": result,
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "unblinded_counts.json", "x") as fh:
            json.dump(record, fh, indent=1, sort_keys=True, default=_json_default)
    for log in logs:
        append_audit_record(log, record)
    return UnblindingResult(record, ran=True, output_dir=out_dir)


def format_result(res: UnblindingResult) -> str:
    rec = res.record
    r = rec["result"]
    lines = []
    if not res.ran:
        lines.append(f"this frozen state was unblinded before, on {rec['time_utc']} by {rec['user']}; "
                     "the recorded result is shown (nothing was re-run)")
        for change in res.changed_since:
            lines.append(f"warning: since then, {change} (a new result needs a new freeze: "
                         "na64reco freeze --force-new)")
    lines.append(f"ledger {rec['ledger']} (state {rec['state_sha256'][:12]}), processor {rec['processor']}")
    lines.append(f"signal box: {r['signal_box']['events']} observed events")
    for name, v in r.get("sidebands", {}).items():
        lines.append(f"sideband {name}: {v['events']} events")
    lines.append(f"beam particles on target: {r.get('n_beam', 0)}")
    for note in rec.get("notes", []):
        lines.append(f"note: {note}")
    if res.ran and rec.get("output_dir"):
        lines.append(f"outputs in {rec['output_dir']}")
    return "\n".join(lines)


_register()
