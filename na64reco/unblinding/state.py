"""What defines an analysis result, as hashes: code, calibration, selection, options, files.

Hashes are SHA-256 over file contents; the state hash is SHA-256 of the canonical JSON
(sorted keys) of the state.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterable
from pathlib import Path

from na64reco import __version__
from na64reco.errors import CalibrationMissing, ConfigError, NA64Error, RawFormatError
from na64reco.io import location
from na64reco.io.location import sha256_file
from na64reco.setup_document import setup_sha256

#: Processor options a ledger may fix (fields of :class:`na64reco.runner.RunOptions`).
RUN_OPTIONS = ("executor", "workers", "chunksize", "skip_bad_files", "retries", "scheduler")
#: File types of the code that count as "the code" (besides calib/ and selections/).
CODE_SUFFIXES = (".py", ".yaml", ".yml", ".json")


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

    roots = {"na64reco": Path(__file__).resolve().parent.parent}
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
    """Version, git commit (if any) and per-file source hashes of the analysis code, with
    the installed blinding regions (``protection/blinding.yaml``)."""
    from na64reco.selection.blinding import protection_path

    roots = roots or code_roots()
    files = {}
    for name, root in roots.items():
        for rel, digest in _tree_hashes(root).items():
            files[f"{name}/{rel}"] = digest
    files["protection/blinding.yaml"] = sha256_file(protection_path())
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
        "setup_sha256": setup_sha256(setup_file) if setup_file.is_file() else None,  # (with its bases)
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


def bad_spills_state(path: str | Path | None, *, missing_ok: bool = False) -> dict | None:
    """The bad-spill list the analysis drops (``na64reco dqm``): path, content hash, spills.

    ``None`` when the analysis uses no list.  The list is read (and so validated) here: a
    list that cannot be read is refused at freeze time, not at unblinding.
    """
    if path is None:
        return None
    from na64reco.bad_spills import load_bad_spills_hashed

    path = Path(path).resolve()
    if missing_ok and not path.is_file():
        return {"path": str(path), "sha256": None, "spills": None}
    spills, sha256 = load_bad_spills_hashed(path)  # the hash of the bytes parsed (one read)
    return {"path": str(path), "sha256": sha256, "spills": len(spills)}


def check_options(options: dict | None) -> dict:
    """``options`` if a run accepts them: known names, the types of the fields of
    :class:`na64reco.runner.RunOptions`, and the values its own checks allow."""
    import typing

    from na64reco.runner import RunOptions

    options = dict(options or {})
    unknown = sorted(set(options) - set(RUN_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown processor option(s) {unknown}; allowed: {', '.join(RUN_OPTIONS)}")
    hints = typing.get_type_hints(RunOptions)
    for name, value in options.items():
        hint = hints[name]
        if not isinstance(value, hint) or (isinstance(value, bool) and hint is not bool):
            expected = getattr(hint, "__name__", None) or str(hint)
            raise ConfigError(f"processor option {name}: {value!r} is not of type {expected}")
    try:
        RunOptions(processor="", **options)  # the run's checks of the values (executor, workers, ...)
    except ConfigError as exc:
        raise ConfigError(f"processor options {canonical_json(options)}: {exc}") from None
    return options


def check_runnable(state: dict) -> None:
    """What a run of the analysis of ``state`` checks before it starts, done now: every input file
    opens and passes the file checks of a run (:func:`na64reco.file_check.check_files`: format,
    checksums, setup of the processor, event numbers, no file twice), with the frozen options'
    ``skip_bad_files``, and the calibration tag covers the run of every file."""
    from na64reco.conditions import load_conditions
    from na64reco.datasets import MixedSamples
    from na64reco.file_check import check_files
    from na64reco.geometry import load_setup

    proc = state["processor"]
    skip = bool(proc["options"].get("skip_bad_files", False))
    try:
        check = check_files({"frozen": [f["path"] for f in state["files"]]}, proc["setup"], skip_bad_files=skip)
    except MixedSamples as exc:  # (its advice is the run's: datasets; a frozen analysis is one sample)
        raise ConfigError(f"the files to freeze mix {exc.first} and {exc.second}: an analysis is frozen and "
                          "unblinded for one sample; freeze each sample as its own analysis") from None
    if not check.good:
        path, rec = next(iter(check.skipped.items()))
        raise NA64Error(f"no input file passes the checks of a run: all {len(check.skipped)} would be skipped "
                        f"(first: {path}: {rec['reason']})")
    cal = state["calibration"]
    first_of_run = {}
    for path, info in check.files.items():
        first_of_run.setdefault(int(info["run"]), path)
    for run, path in sorted(first_of_run.items()):
        try:
            load_conditions(load_setup(proc["setup"], run=run), run, cal["tag"], root=Path(cal["root"]))
        except (ConfigError, CalibrationMissing) as exc:
            raise type(exc)(f"{path} is run {run}: {exc}") from None


def analysis_state(*, processor: str, calib_tag: str, files: Iterable[str | Path],
                   selection: str | None = None, options: dict | None = None,
                   calib_root: Path | None = None, roots: dict[str, Path] | None = None,
                   missing_ok: bool = False, bad_spills: str | Path | None = None) -> dict:
    """Everything that defines the result of running ``processor`` over ``files``."""
    from na64reco.conditions import check_tag_name
    from na64reco.selection.schema import load_selection

    check_tag_name(calib_tag, "calibration tag")  # it names the file tags/<tag>.yaml
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
        "bad_spills": bad_spills_state(bad_spills, missing_ok=missing_ok),
    }


def dataset_hash(files: list[dict]) -> str:
    """Content hash of a data set: SHA-256 of the sorted SHA-256s of its files (paths do not count)."""
    return state_hash(sorted(f["sha256"] for f in files))

