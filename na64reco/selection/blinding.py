"""The blinding rule.

For *data* (raw files without truth), every event that is not provably outside the
protected region of its setup (``selections/blinding.yaml``) or the selection's signal
box (a NaN box variable counts as inside) is removed right after the cuts are
evaluated, before any histogram, N-1 plot, count, log line or output sees it, unless it
lies in one of the setup's ``visible_controls`` (events that clearly fail a veto).
So events passing every cut inside the box never reach an output, and their number
cannot be obtained by subtraction either: they are hidden together with the box
events that fail other cuts.  The cut-flow's signal-box row reads ``"blinded"``
(see :class:`~na64reco.selection.cuts.CutflowTable`).

The rule depends only on the events, the protected regions and the selection's box:
not on the cut order in the YAML, not on any option.  The protected regions are read from
the installed package (``selections/blinding.yaml`` of the checkout, or of the wheel's
``_data``), never from ``NA64RECO_SELECTIONS`` or another path a user can redirect:
selections may come from anywhere, the protected region may not.  The box can be opened
only with an :class:`~na64reco.selection.token.UnblindingToken`, which only a running
``na64reco unblind`` issues and which is bound to one selection file (its SHA-256) and to
a secret held in that process's memory (``na64reco.selection.token``).

The protected variables are reconstructed quantities, and the reconstruction depends on
the setup description and the conditions, which a user chooses (``--calib-tag``,
``NA64RECO_CALIB``): a tag or setup with, say, twice the MS2 field integral would move the
box events above 80 GeV.  So for data the protected region is also evaluated on the
reconstruction with the *reference* inputs -- the installed package's setup and its default
tag for the run (:func:`reference_inputs`, no option or environment variable moves them) --
and an event protected by either stays hidden (:func:`reference_protected`).  When the
chosen inputs are the reference ones (same file contents) nothing is reconstructed twice;
when only one conditions payload differs, only the stage that reads it is.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import awkward as ak
import numpy as np

from na64reco import as_loaded
from na64reco.config import load_yaml
from na64reco.errors import BlindingError, ConfigError, NA64Error
from na64reco.io.location import sha256_file
from na64reco.resources import package_calib_dir, package_selections_dir
from na64reco.selection.cuts import outside_mask, region_mask
from na64reco.selection.schema import Region, Selection, parse_region
from na64reco.selection.token import UnblindingToken, unblinding_lock_path
from na64reco.setup_document import setup_sources

__all__ = ["PROTECTED_FILE", "BlindingDecision", "Protection", "UnblindingToken", "apply_blinding", "blind_mask",
           "check_sidebands", "check_unblind_argument", "load_protection", "protected_mask", "protection_path",
           "protection_text", "reference_inputs", "reference_protected", "unblinding_lock_path",
           "uses_reference_inputs", "withhold_protected"]

PROTECTED_FILE = "blinding.yaml"


@dataclass(frozen=True)
class Protection:
    """What stays hidden in the data of one setup."""

    protected: Region
    visible_controls: tuple[Region, ...]


def protection_path():
    """The installed package's ``blinding.yaml`` (no environment variable can move it)."""
    return package_selections_dir() / PROTECTED_FILE


@functools.lru_cache(maxsize=4)
def load_protection(setup: str) -> Protection:
    """The protected region and visible controls of ``setup``, from :func:`protection_path`."""
    node = load_yaml(protection_path(), schema_version=1)
    entry = node.node("setups").node(setup)
    protected = parse_region(entry.node("protected"), setup, "protected")
    controls = tuple(parse_region(c, setup, f"control{i}") for i, c in
                     enumerate(entry.nodes("visible_controls") if entry.has("visible_controls") else []))
    return Protection(protected, controls)


# -- sidebands outside the blinded region ----------------------------------------------------
# A set of values of one variable: half-open intervals [lo, hi) and whether NaN is in it.
_EVERY = (((-math.inf, math.inf),), True)


def _within(lo, hi, nan: bool):
    return (((-math.inf if lo is None else lo, math.inf if hi is None else hi),), nan)


def _beyond(lo, hi, nan: bool):
    parts = (((-math.inf, lo),) if lo is not None else ()) + (((hi, math.inf),) if hi is not None else ())
    return parts, nan


def _meet(a, b):
    spans = tuple((max(x0, y0), min(x1, y1)) for x0, x1 in a[0] for y0, y1 in b[0] if max(x0, y0) < min(x1, y1))
    return spans, a[1] and b[1]


def _constrain(sets: dict, variable: str, values) -> None:
    sets[variable] = _meet(sets.get(variable, _EVERY), values)


def _sideband_values(selection: Selection, region: Region) -> dict:
    """What a sideband allows of each scalar variable its range and its cuts' ranges constrain (every
    range cut passed: finite and inside; the ``fails`` cut: measured outside,
    :func:`na64reco.selection.cuts.failed_mask`); other cuts (counts, bits, per-module) constrain no variable here."""
    sets: dict = {}
    _constrain(sets, region.variable, _within(region.min, region.max, False))
    for c in selection.cuts:
        if c.type != "range":
            continue
        _constrain(sets, c.variable, _beyond(c.min, c.max, False) if c.name == region.fails
                   else _within(c.min, c.max, False))
    return sets


def _hidden_values(box: Region, controls: tuple[Region, ...]) -> dict:
    """What data events withheld for ``box`` allow of each variable: inside it or NaN, and in no
    visible control (outside each control's range, or NaN)."""
    sets: dict = {}
    _constrain(sets, box.variable, _within(box.min, box.max, True))
    for c in controls:
        _constrain(sets, c.variable, _beyond(c.min, c.max, True))
    return sets


def check_sidebands(selection: Selection) -> None:
    """A ConfigError naming the selection file for a sideband that may hold events withheld from data
    (:func:`protected_mask`: the setup's protected region, or the selection's box, and no visible
    control): on data those are hidden, on simulation counted, so the sideband's data count would fall
    short without a sign (e.g. ``fails: no_veto`` with a VETO cut below the protection's 25 MeV: the
    events between are hidden).  A sideband passes if one variable's values it allows and the withheld
    events' values do not meet, from the ranges alone (a sound check: what it cannot prove apart is
    refused)."""
    protection = load_protection(selection.setup)
    for sb in selection.sidebands:
        mine = _sideband_values(selection, sb)
        for box, what in ((protection.protected, f"the blinded region of {PROTECTED_FILE}"),
                          (selection.signal_box, "the signal box")):
            hidden = _hidden_values(box, protection.visible_controls)
            if any(_meet(mine[v], hidden[v]) == ((), False) for v in mine.keys() & hidden.keys()):
                continue  # apart on this variable
            controls = "; ".join(c.text for c in protection.visible_controls) or "none"
            raise ConfigError(f"{selection.source}: sideband {sb.name!r} ({sb.text}) can hold events of {what} "
                              f"({box.text}, unless in a visible control: {controls}), which are withheld from "
                              f"data: its data count would fall short of the simulation's.  Its range or its "
                              f"cuts must exclude them by one variable: a range outside '{box.text}', or a "
                              f"failed cut whose failures all lie in a visible control")


def protected_mask(reco: ak.Array, setup: str) -> np.ndarray:
    """Data events that stay hidden whatever the selection: not provably outside the
    setup's protected region (NaN counts as inside) and in no visible control region."""
    protection = load_protection(setup)
    inside = ~outside_mask(reco, protection.protected)
    for region in protection.visible_controls:
        inside &= ~region_mask(reco, region)
    return inside


def withhold_protected(reco: ak.Array, setup: str, reference: np.ndarray | None = None) -> tuple[ak.Array, int]:
    """``(reco without the protected events, how many were withheld)``: what an exporter or
    viewer of *data* may show before the unblinding (``na64reco reco``, the event display).
    ``reference``: the events protected by the reference reconstruction
    (:func:`reference_protected`), withheld too."""
    hidden = protected_mask(reco, setup)
    if reference is not None:
        hidden |= reference
    return reco[~hidden], int(np.count_nonzero(hidden))


def reference_inputs(setup: str, run: int):
    """``(Setup, RunConditions)`` of ``run`` from the installed package: its setup file and
    its default tag (``NA64RECO_CALIB`` and ``--calib-tag`` do not move them).  Cached, and
    read again if either object was edited in place since (:mod:`na64reco.as_loaded`: the
    objects are shared, e.g. with whoever called this before).  A :class:`BlindingError` if one
    of their files was read by this process with other content than it has now (edited, read,
    restored: the loaders' and the reconstruction's caches, keyed by path, hold the edit; in a
    checkout the package's ``calib/`` is the analyst's): the reference needs a fresh process."""
    source, _, files = _reference_files(setup, int(run))
    for path in (source, *files.values()):
        if as_loaded.changed_since_read(path, _file_sha(path)):
            raise BlindingError(f"{path}: this file of the reference calibration changed after this process "
                                "read it (the loaded constants are the old ones); start a fresh process")
    pair = _reference_inputs(setup, int(run))
    if not (as_loaded.unchanged(pair[0]) and as_loaded.unchanged(pair[1])):
        from na64reco.geometry import load_setup

        _reference_inputs.cache_clear()
        load_setup.cache_clear()
        pair = _reference_inputs(setup, int(run))
    return pair


@functools.lru_cache(maxsize=16)
def _reference_inputs(setup: str, run: int):
    from na64reco.conditions import default_tag, load_conditions
    from na64reco.geometry import load_setup

    root = package_calib_dir()
    described = load_setup(str(root / "setups" / f"{setup}.yaml"), run=int(run))
    return described, load_conditions(described, int(run), default_tag(setup, root), root=root)


_FILE_SHA: dict[tuple, str] = {}


def _file_sha(path) -> str:
    """SHA-256 of a file's bytes, cached by (path, size, mtime)."""
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    sha = _FILE_SHA.get(key)
    if sha is None:
        sha = _FILE_SHA[key] = sha256_file(path)
    return sha


def _inputs(source, name: str, period: str, run: int, files: dict) -> dict | None:
    """What a reconstruction is made of, part by part: ``"setup"`` -> the contents of the setup
    file and its bases (:func:`~na64reco.setup_document.setup_sources`), the setup, period and
    run; each conditions payload -> its file's contents (None if a file is unreadable)."""
    try:
        shas = tuple(_file_sha(p) for p in setup_sources(source))
        return {"setup": (shas, name, period, int(run)), **{k: _file_sha(v) for k, v in files.items()}}
    except (OSError, TypeError, ConfigError):
        return None


@functools.lru_cache(maxsize=16)
def _reference_files(setup: str, run: int) -> tuple[str, str, dict]:
    """``(setup file, period, conditions files)`` of :func:`reference_inputs`, without loading them
    (what :func:`reference_protected` compares with first: ~0.1 ms instead of ~250 ms)."""
    from na64reco.conditions import default_tag, resolve
    from na64reco.geometry import period_of_run

    root = package_calib_dir()
    source = str(root / "setups" / f"{setup}.yaml")
    period = period_of_run(source, int(run))
    return source, period.name if period else "", resolve(default_tag(setup, root), int(run), root)


def _stages_to_redo(mine: dict | None, reference: dict | None) -> tuple[str, ...] | None:
    """The reconstruction stages whose inputs differ from the reference's, or None for all
    of them (the setup differs, or a part is unknown).  A stage reads the events, the setup
    and its one conditions payload only (:data:`na64reco.reco.event.STAGES`, enforced by
    :meth:`~na64reco.conditions.RunConditions.scoped`), so with the same setup and payload
    file contents its fields are the reference's."""
    from na64reco.reco.event import STAGES

    if mine is None or reference is None or mine["setup"] != reference["setup"]:
        return None
    return tuple(stage for stage, (_, payload) in STAGES.items()
                 if payload not in mine or mine[payload] != reference.get(payload))


def _compared_inputs(setup, conditions) -> tuple[dict | None, dict | None]:
    """(the inputs of a reconstruction with ``setup`` and ``conditions``, the reference's), part
    by part (:func:`_inputs`; ~0.1 ms).  Objects not as their loaders made them (edited in
    place, or made in memory: :func:`na64reco.as_loaded.unchanged`, ~0.5 ms) are not identified
    by their files: their inputs are unknown (None), and the whole reference reconstruction runs; so
    are objects read from a file that was edited since (:func:`na64reco.as_loaded.read_once`)."""
    run = int(conditions.run)
    try:
        source, period, files = _reference_files(setup.name, run)
    except NA64Error as exc:
        raise _no_reference(setup, run, exc) from None
    reference = _inputs(source, setup.name, period, run, files)
    if not (as_loaded.unchanged(setup) and as_loaded.unchanged(conditions)):
        return None, reference
    mine = _inputs(setup.source, setup.name, setup.period, run, conditions.files)
    if mine is not None and not all(as_loaded.read_once(path, _file_sha(path))
                                    for path in (*setup_sources(setup.source), *conditions.files.values())):
        # a file edited since it was read (the setup's own or its base): the objects (and caches) hold
        # what it said then
        return None, reference
    return mine, reference


def _no_reference(setup, run: int, exc: Exception) -> BlindingError:
    return BlindingError(f"data run {run}: the protected region cannot be checked with the "
                         f"installed package's {setup.name} setup and default calibration tag ({exc}); "
                         "blinding needs that reference reconstruction for every data run")


def uses_reference_inputs(setup, conditions) -> bool:
    """True when ``setup`` and ``conditions`` are the reference ones (:func:`reference_inputs`, compared
    file by file): :func:`reference_protected` then returns None, so a caller need not prepare the
    events for it (the processors skip assembling a data chunk a second time)."""
    mine, reference = _compared_inputs(setup, conditions)
    return reference is not None and mine == reference


def reference_protected(events, setup, conditions, reconstruct, *, reco=None, always: bool = False
                        ) -> np.ndarray | None:
    """Data ``events`` (raw, released from their data mark) that are protected when
    reconstructed with the reference inputs (:func:`reference_inputs`) by
    ``reconstruct(events, setup, conditions[, stages=...])``; None when ``setup`` and
    ``conditions`` are the reference ones (:func:`uses_reference_inputs`: the caller's own
    :func:`protected_mask` then says it all), unless ``always`` (for inputs that may have been
    changed in memory, e.g. the event display's).

    ``reco``: the caller's reconstruction of the same ``events`` with ``setup`` and
    ``conditions`` as read from their files (the library's ``reconstruct``).  With it, only
    the stages whose inputs differ from the reference's are run again (e.g. the calorimeter
    stage for a new calorimeter payload) and the other stages' fields are taken from
    ``reco``: the same values the reference would compute (:func:`_stages_to_redo`)."""
    run = int(conditions.run)
    mine, reference = _compared_inputs(setup, conditions)
    if not always and reference is not None and mine == reference:
        return None
    try:
        ref_setup, ref_conditions = reference_inputs(setup.name, run)
    except NA64Error as exc:
        raise _no_reference(setup, run, exc) from None
    stages = None if always or reco is None else _stages_to_redo(mine, reference)
    if stages is None:
        return np.asarray(protected_mask(reconstruct(events, ref_setup, ref_conditions), setup.name), bool)
    if len(reco) != len(events):
        raise ValueError(f"reference_protected: reco has {len(reco)} records for {len(events)} events")
    redone = reconstruct(events, ref_setup, ref_conditions, stages=stages)
    if not np.array_equal(np.asarray(redone["event"]), np.asarray(reco["event"])):
        raise ValueError("reference_protected: reco is not the reconstruction of these events")
    fields = {name: reco[name] for name in reco.fields}
    fields.update({name: redone[name] for name in redone.fields})
    return np.asarray(protected_mask(ak.zip(fields, depth_limit=1), setup.name), bool)


def protection_text(setup: str) -> str:
    """The protected region and its visible controls, in words (for output metadata)."""
    protection = load_protection(setup)
    # (an event without the variable, e.g. no outgoing track, is not provably outside: most withheld ones)
    text = f"{protection.protected.text} or {protection.protected.variable} not measured"
    if protection.visible_controls:
        text += " unless " + " or ".join(c.text for c in protection.visible_controls)
    return text


@dataclass(frozen=True)
class BlindingDecision:
    """What blinding did to one chunk (never shown for data: it would reveal the box)."""

    keep: np.ndarray  # events that may be used further
    blinded: bool     # True for data that was not unblinded


def blind_mask(reco: ak.Array, masks: dict[str, np.ndarray], selection: Selection) -> np.ndarray:
    """Data events to hide: not provably outside the protected region or the selection's
    box, and not in a visible control region.  (``masks`` is accepted for symmetry with
    the cut evaluation; the rule deliberately does not depend on the editable cuts.)"""
    control = np.zeros(len(reco), bool)
    for region in load_protection(selection.setup).visible_controls:
        control |= region_mask(reco, region)
    return protected_mask(reco, selection.setup) | (~outside_mask(reco, selection.signal_box) & ~control)


def apply_blinding(reco: ak.Array, masks: dict[str, np.ndarray], selection: Selection, *,
                   is_data: bool, token: UnblindingToken | None = None,
                   reference: np.ndarray | None = None) -> BlindingDecision:
    """Decide which events survive blinding (all of them for simulation).  ``reference``:
    the data events protected by the reference reconstruction (:func:`reference_protected`),
    hidden too."""
    n = len(reco)
    if not is_data:
        return BlindingDecision(np.ones(n, bool), False)
    if token is not None:
        UnblindingToken.check(check_unblind_argument(token), selection)  # the class's own check, not the object's
        return BlindingDecision(np.ones(n, bool), False)
    hidden = blind_mask(reco, masks, selection)
    if reference is not None:
        hidden = hidden | reference
    return BlindingDecision(~hidden, True)


def check_unblind_argument(unblind) -> UnblindingToken | None:
    """Validate a processor's ``unblind`` argument: ``None`` or a real token."""
    if unblind is None:
        return None
    if type(unblind) is UnblindingToken:  # exactly: a subclass or a look-alike could redefine check()
        return unblind
    raise BlindingError(f"unblind={unblind!r} is not accepted: only an UnblindingToken issued from "
                        "a frozen-analysis ledger can open the signal box")
