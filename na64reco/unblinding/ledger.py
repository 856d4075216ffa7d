"""The ledger: the frozen state of an analysis, written once, checked at every read."""

from __future__ import annotations

import datetime as _dt
import getpass
import json
from collections.abc import Iterable
from pathlib import Path

from na64reco.atomic import write_new_file
from na64reco.errors import BlindingError, ConfigError, NA64Error
from na64reco.io import location
from na64reco.unblinding.audit import AUDIT_FORMAT, append_to_logs, default_audit_log
from na64reco.unblinding.diff import Difference, diff_states
from na64reco.unblinding.registry import file_hashes, registry_logs, unblinded_before, user_registry
from na64reco.unblinding.state import analysis_state, check_runnable, dataset_hash, state_hash

LEDGER_FORMAT = "na64reco-ledger"
LEDGER_VERSION = 1


def _utcnow() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _ledger_body_hash(ledger: dict) -> str:
    return state_hash({k: v for k, v in ledger.items() if k != "ledger_sha256"})


def make_ledger(state: dict, *, supersedes: list[dict] | None = None, note: str = "", reason: str = "",
                registry: str | None = None) -> dict:
    ledger = {
        "format": LEDGER_FORMAT,
        "ledger_version": LEDGER_VERSION,
        "frozen_at": _utcnow(),
        "frozen_by": getpass.getuser(),
        "note": note,
        "supersedes": supersedes or [],
        "reason": reason,
        "registry": registry,
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
    _check_form(ledger, path)
    return ledger


#: What :func:`read_ledger` requires of a ledger beyond its hashes (a ledger written by another tool, or
#: edited with its hashes recomputed): dotted key -> the types allowed.
_FORM = {
    "frozen_at": str, "frozen_by": str, "note": str, "reason": str, "supersedes": list,
    "state.processor": dict, "state.processor.name": str, "state.processor.setup": str,
    "state.processor.options": dict, "state.selection": dict, "state.selection.path": str,
    "state.selection.sha256": str, "state.selection.name": str, "state.calibration": dict,
    "state.calibration.tag": str, "state.calibration.tag_sha256": str, "state.calibration.root": str,
    "state.calibration.setup": str, "state.calibration.setup_sha256": str, "state.calibration.conditions": dict,
    "state.code": dict, "state.code.version": str, "state.code.source_sha256": str,
    "state.code.source_files": dict, "state.code.git_commit": (str, type(None)), "state.files": list,
    "state.bad_spills": (dict, type(None)),
}
_FILE_FORM = {"path": str, "sha256": str, "size": int}
_BAD_SPILLS_FORM = {"path": str, "sha256": (str, type(None)), "spills": (int, type(None))}
_SUPERSEDED_FORM = {"state_sha256": str, "ledger": str}


def _check_form(ledger: dict, path: Path) -> None:
    """A :class:`BlindingError` naming the key of ``ledger`` that is missing or of another type than
    a frozen ledger has (:data:`_FORM`), or an empty list of files."""

    def fail(key: str, what: str):
        raise BlindingError(f"ledger {path}: key {key!r} {what}: not a ledger as na64reco freeze writes it; "
                            "freeze again into a new ledger")

    def of_type(value, types, key: str):
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
            fail(key, f"is a {type(value).__name__}, expected {names}")
        return value

    def check(node: dict, form: dict, prefix: str) -> None:
        for key, types in form.items():
            value = node
            for part in key.split("."):
                if not isinstance(value, dict) or part not in value:
                    fail(prefix + key, "is missing")
                value = value[part]
            of_type(value, types, prefix + key)

    check(ledger, _FORM, "")
    state = ledger["state"]
    if not state["files"]:
        fail("state.files", "is empty")
    for i, f in enumerate(state["files"]):
        check(of_type(f, dict, f"state.files.{i}"), _FILE_FORM, f"state.files.{i}.")
    if state["bad_spills"] is not None:
        check(state["bad_spills"], _BAD_SPILLS_FORM, "state.bad_spills.")
    for i, sup in enumerate(ledger["supersedes"]):
        check(of_type(sup, dict, f"supersedes.{i}"), _SUPERSEDED_FORM, f"supersedes.{i}.")


def _same_dataset(a: dict, b: dict) -> bool:
    return (a["processor"]["name"] == b["processor"]["name"]
            and [f["path"] for f in a["files"]] == [f["path"] for f in b["files"]])


def _earlier_ledgers(ledger_path: Path, state: dict) -> list[dict]:
    """Ledgers in the same directory that froze the same processor on the same files."""
    out = []
    for other in sorted(ledger_path.resolve().parent.glob("*.json")):
        try:
            old = read_ledger(other)
        except BlindingError:
            continue
        if _same_dataset(old["state"], state):
            out.append({"ledger": str(other), "state_sha256": old["state_sha256"], "frozen_at": old["frozen_at"]})
    return out


def freeze(ledger_path: str | Path, *, processor: str, calib_tag: str, files: Iterable[str | Path],
           selection: str | None = None, options: dict | None = None, force_new: bool = False,
           reason: str = "", note: str = "", calib_root: Path | None = None,
           roots: dict[str, Path] | None = None, registry: str | Path | None = None,
           bad_spills: str | Path | None = None) -> dict:
    """Record the analysis state in a new ledger file; return the ledger.

    An existing ledger is never overwritten.  What a run would refuse before it starts is refused
    here, before the ledger is written (:func:`~na64reco.unblinding.state.check_runnable`: options,
    input files, setup, calibration coverage), not at the unblinding.  If another ledger in the
    same directory (only there: freezes are not in the registry) froze the same processor and
    files, or the same data set (by content) was unblinded
    before, anywhere (:mod:`~na64reco.unblinding.registry`), freezing again is re-tuning:
    it needs ``force_new`` (and, after an unblinding, a ``reason``, recorded in the ledger
    and the registry) and the new ledger lists what it supersedes.
    """
    ledger_path = Path(ledger_path)
    if ledger_path.exists():
        raise BlindingError(f"{ledger_path} exists: a frozen ledger is never overwritten; freeze into "
                            "a new file (--force-new --ledger NEW.json) if the analysis really changed")
    files = list(files)
    seen: dict[str, str] = {}
    for f in files:  # as `run` refuses a file given twice (a typo the ledger would silently merge)
        key = location.resolve(f)
        if key in seen:
            raise ConfigError(f"input file {f} is given twice ({seen[key]}): list each file once")
        seen[key] = str(f)
    state = analysis_state(processor=processor, calib_tag=calib_tag, files=files, selection=selection,
                           options=options, calib_root=calib_root, roots=roots, bad_spills=bad_spills)
    check_runnable(state)  # an analysis that cannot run would only fail, on the record, at unblind
    earlier = _earlier_ledgers(ledger_path, state)
    unblinded = unblinded_before(state, registry)
    if unblinded and not force_new:
        u = unblinded[0]
        which = "these files were" if u["shared_files"] is None else f"{u['shared_files']} of these files were"
        when = u["unblinded_at"] + ("" if u["ended"] else ", a start without an end: running, or died")
        raise BlindingError(f"{which} unblinded before ({when} by {u['unblinded_by']}, "
                            f"ledger {u['ledger']}): a new freeze of the same data is re-tuning after "
                            "unblinding; use --force-new --reason '...' to record it")
    if earlier and not force_new:
        names = ", ".join(e["ledger"] for e in earlier)
        raise BlindingError(f"{names} already froze {processor} on these files; freezing again is "
                            "re-tuning the analysis: use --force-new to record that the new ledger "
                            "supersedes it")
    if unblinded and not reason.strip():
        raise BlindingError("--force-new over a data set that was unblinded needs --reason '...' (it goes "
                            "into the ledger and the unblinding logs)")
    known = {e["state_sha256"] for e in earlier}
    supersedes = earlier + [u for u in unblinded if u["state_sha256"] not in known]
    ledger = make_ledger(state, supersedes=supersedes, note=note, reason=reason,
                         registry=str(user_registry(registry)))
    ledger_path.parent.mkdir(parents=True, exist_ok=True)
    # whole or not at all (a half-written ledger would block the next freeze), never overwritten
    write_new_file(ledger_path, json.dumps(ledger, indent=1, sort_keys=True) + "\n")
    if unblinded:  # re-tuning after an unblinding is on the record, with its reason
        record = {"format": AUDIT_FORMAT, "kind": "freeze-after-unblinding", "user": ledger["frozen_by"],
                  "time_utc": ledger["frozen_at"], "ledger": str(ledger_path.resolve()),
                  "ledger_sha256": ledger["ledger_sha256"], "state_sha256": ledger["state_sha256"],
                  "dataset_sha256": dataset_hash(state["files"]), "file_sha256s": file_hashes(state["files"]),
                  "reason": reason, "supersedes": unblinded}
        registries = registry_logs(record["dataset_sha256"], state["files"], registry, for_writing=True)
        append_to_logs([default_audit_log(ledger_path), registries[0]], registries[1:], record)
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
            options=fp["options"], calib_root=None, roots=roots, missing_ok=True,
            bad_spills=(frozen.get("bad_spills") or {}).get("path"))
    except ConfigError as exc:
        raise BlindingError(f"ledger {ledger_path}: the frozen analysis cannot be rebuilt: {exc}") from None
    except NA64Error as exc:
        raise BlindingError(f"ledger {ledger_path}: {exc}") from None
    return ledger, current, diff_states(frozen, current)
