"""Raw events -> one flat record of physics quantities per event.

This is the stage the processors, ``na64reco reco`` and the notebooks call::

    raw = open_raw("run.root")
    conds = load_conditions(raw.setup, raw.run, tag)
    reco = reconstruct(raw.events(), load_setup(raw.setup, run=raw.run), conds, source=str(raw.path))

Energies and momenta are in GeV, NaN where not reconstructed.  Per-module quantities
(``hcal_module_energy``, ``veto_paddle_energy``, ``srd_module_energy``) are regular
``n x k`` arrays.  Muon setups also get ``mu_in`` and ``mu_out``: scikit-hep ``vector``
``Momentum4D`` records (px, py, pz, mass in GeV) of the incoming and outgoing muon at the
ECAL, None unless the momentum and both track projections are measured
(:mod:`na64reco.reco.kinematics`), so ``reco.mu_in.deltaangle(reco.mu_out)`` is the kink
angle.  For simulated files, :func:`attach_truth` adds ``truth_*`` fields.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from na64reco.conditions import RunConditions
from na64reco.geometry import Setup
from na64reco.io.raw import check_truth_rows, numpy_field, refuse_data_events
from na64reco.reco.calo import reconstruct_calo
from na64reco.reco.inputs import check_belong
from na64reco.reco.kinematics import muon_vectors
from na64reco.reco.tracking.stage import reconstruct_tracks

#: Fields every reconstructed record has (others may follow).
REQUIRED_FIELDS = (
    "run", "spill", "event", "trigger", "p_in", "p_out", "n_tracks_in", "n_tracks_out",
    "chi2_in", "chi2_out", "ecal_energy", "ecal_preshower_energy", "hcal_energy",
    "vhcal_energy", "veto_energy",
)
TRUTH_FIELDS = ("process", "weight", "p_in", "p_out", "x", "vertex_z", "e_ecal", "e_hcal")


#: The reconstruction's stages: name -> (function, the one conditions payload it reads).
#: Each runs with only its payload readable (:meth:`RunConditions.scoped`), so its fields
#: depend on the events, the setup and that payload alone.
STAGES = {"calo": (reconstruct_calo, "calorimeter"), "tracking": (reconstruct_tracks, "tracker")}

#: Fields an analysis that does not read them may leave out (``reconstruct(leave_out=...)``), because
#: they cost noticeably more than the rest of their stage: name -> (stage, the stage function's keyword
#: that turns it off).  ``ecal_shower_chi2``: the ECAL shower-shape fit over impact points, ~half of
#: the calorimeter event loop, which the NA64mu selection (a MIP in the ECAL) does not use.
OPTIONAL_FIELDS = {"ecal_shower_chi2": ("calo", "shower_chi2")}


def reconstruct(events: ak.Array, setup: Setup, conditions: RunConditions, source: str = "", *,
                stages=None, leave_out=()) -> ak.Array:
    """Reconstruct raw ``events`` (as from :meth:`RawFile.events`) into flat records.

    ``stages``: a name or names of :data:`STAGES` to run (default all): a record of the event
    identifiers and those stages' fields only (``mu_in``/``mu_out`` come with ``tracking``).
    ``leave_out``: a name or names of :data:`OPTIONAL_FIELDS` not to compute (the record lacks them).
    Events of a data file are refused (:class:`~na64reco.errors.BlindingError`): use
    :func:`na64reco.export.iterate_reco`, which withholds the protected region."""
    _check_types(events, setup, conditions)
    check_belong(events, setup, conditions, source, "reconstruct()")
    refuse_data_events(events, "reconstruct()")
    names = tuple(STAGES) if stages is None else (stages,) if isinstance(stages, str) else tuple(stages)
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise ValueError(f"unknown reconstruction stage {unknown[0]!r}; expected some of {', '.join(STAGES)}")
    leave_out = (leave_out,) if isinstance(leave_out, str) else tuple(leave_out)
    off = [n for n in leave_out if n not in OPTIONAL_FIELDS]
    if off:
        raise ValueError(f"field {off[0]!r} cannot be left out; the optional fields are {', '.join(OPTIONAL_FIELDS)}")
    out: dict[str, object] = {k: numpy_field(events, k) for k in ("run", "spill", "event", "trigger")}
    for stage in names:
        function, payload = STAGES[stage]
        switches = {OPTIONAL_FIELDS[n][1]: False for n in leave_out if OPTIONAL_FIELDS[n][0] == stage}
        for name, value in function(events, setup, conditions.scoped(payload), source=source, **switches).items():
            if name in out:
                raise RuntimeError(f"reconstruction stages both produce {name!r}")
            out[name] = value
    if "tracking" in names and setup.beam.particle.startswith("mu"):
        out.update(muon_vectors(out))  # mu_in, mu_out: vector records from p and the slopes
    return record({k: _column(v) for k, v in out.items()})


def _check_types(events, setup, conditions) -> None:
    """Clear errors for arguments of :func:`reconstruct` of the wrong kind."""
    if not isinstance(events, ak.Array):
        hint = "; for one event pass events[i:i + 1]" if isinstance(events, ak.Record) else ""
        raise TypeError(f"reconstruct(): events is a {type(events).__name__}; expected an awkward Array of raw "
                        f"events (RawFile.events()){hint}")
    if not isinstance(setup, Setup):
        raise TypeError(f"reconstruct(): setup is a {type(setup).__name__}; expected a Setup "
                        "(load_setup(name, run=run))")
    if not isinstance(conditions, RunConditions):
        raise TypeError(f"reconstruct(): conditions is a {type(conditions).__name__}; expected RunConditions "
                        "(load_conditions(setup, run))")


def attach_truth(reco: ak.Array, truth: dict[str, np.ndarray], source: str = "<events>", start: int = 0) -> ak.Array:
    """Add ``truth_<name>`` fields from the truth tree rows matching ``reco``'s events; a
    :class:`RawFormatError` naming ``source`` and the first entry (from ``start``) whose numbers
    differ otherwise (:func:`na64reco.io.raw.check_truth_rows`)."""
    check_truth_rows(truth["event"], reco["event"], source, start)
    fields = _fields(reco)  # one record, not a copy per added field
    fields.update({f"truth_{name}": np.asarray(truth[name]) for name in TRUTH_FIELDS})
    return record(fields)


def record(fields: dict) -> ak.Array:
    """``ak.zip(fields, depth_limit=1)`` built as one ``RecordArray`` of the fields' layouts
    when they are numpy or awkward arrays of one length without behaviours or attrs of their
    own (else ``ak.zip`` itself): ``ak.zip`` broadcasts field by field, ~70 us each, ~4 ms
    per record of ~60 fields, the same for 940 events as for 5000 (docs/performance.md,
    "Per-file overhead", third pass).  Same type and values (``tests/test_reco_record.py``)."""
    layouts = []
    for v in fields.values():
        if isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype.kind in "biuf":
            layouts.append(ak.contents.NumpyArray(v))
        elif isinstance(v, ak.Array) and not v.behavior and not v.attrs:
            layouts.append(v.layout)
        elif isinstance(v, ak.contents.Content):  # a field's layout (:func:`_fields`)
            layouts.append(v)
        else:
            return _zip(fields)
    lengths = {layout.length for layout in layouts}
    if len(lengths) != 1:
        return _zip(fields)  # (its error for fields of different lengths)
    return ak.Array(ak.contents.RecordArray(layouts, list(fields), length=lengths.pop()))


def concatenate(records: list[ak.Array]) -> ak.Array:
    """``ak.concatenate(records)`` of records of the same fields (the reconstruction of a chunk
    in slices): fields that are numbers, fixed-size lists of numbers or masked records of
    numbers (the ``Momentum4D`` vectors) joined as their numpy buffers, others by awkward.
    ``ak.concatenate`` merges field by field through its generic machinery, ~150 ms per 50k
    events of the reco record (docs/performance.md, "Per-file overhead", fourth pass).
    Same form and values (``tests/test_reco_record.py``)."""
    layouts = [r.layout for r in records]
    first = layouts[0] if layouts else None
    if (len(layouts) < 2 or any(r.behavior or r.attrs for r in records)
            or not all(isinstance(x, ak.contents.RecordArray) and not x.is_tuple and x.fields == first.fields
                       and x.parameters == first.parameters for x in layouts)):
        return ak.concatenate(records)
    contents = []
    for name in first.fields:
        parts = [x.content(name) for x in layouts]
        merged = _merged(parts)
        contents.append(merged if merged is not None else ak.concatenate([ak.Array(x) for x in parts]).layout)
    return ak.Array(ak.contents.RecordArray(contents, list(first.fields), length=sum(x.length for x in layouts),
                                            parameters=first.parameters))


def _merged(parts: list):
    """The layouts ``parts`` (each cut to its length) joined, or None if not of one simple kind."""
    first = parts[0]
    kind, params = type(first), first.parameters
    if not all(type(x) is kind and x.parameters == params for x in parts):
        return None
    n = sum(x.length for x in parts)
    if kind is ak.contents.NumpyArray:
        if all(x.data.ndim == 1 and x.data.dtype == first.data.dtype for x in parts):
            return ak.contents.NumpyArray(np.concatenate([x.data for x in parts]), parameters=params)
        return None
    if kind is ak.contents.RegularArray:
        if not all(x.size == first.size for x in parts) or first.size == 0:
            return None
        inner = _merged([x.content[:x.length * x.size] for x in parts])
        return None if inner is None else ak.contents.RegularArray(inner, first.size, zeros_length=n,
                                                                   parameters=params)
    if kind is ak.contents.ByteMaskedArray:
        if not all(x.valid_when == first.valid_when for x in parts):
            return None
        inner = _merged([x.content[:x.length] for x in parts])
        if inner is None:
            return None
        mask = np.concatenate([np.asarray(x.mask.data)[:x.length] for x in parts])
        return ak.contents.ByteMaskedArray(ak.index.Index8(mask), inner, first.valid_when, parameters=params)
    if kind is ak.contents.RecordArray:
        if not all(x.fields == first.fields and not x.is_tuple for x in parts):
            return None
        contents = [_merged([x.content(name) for x in parts]) for name in first.fields]
        if any(c is None for c in contents):
            return None
        return ak.contents.RecordArray(contents, list(first.fields), length=n, parameters=params)
    return None


def _zip(fields: dict) -> ak.Array:
    return ak.zip({k: ak.Array(v) if isinstance(v, ak.contents.Content) else v for k, v in fields.items()},
                  depth_limit=1)


def _fields(records: ak.Array) -> dict:
    """``{name: records[name]}``; of a plain record array (no behaviour or attrs of its own) the
    fields' layouts, without awkward's projection of each (~30 us a field, ~60 fields)."""
    layout = records.layout
    if isinstance(layout, ak.contents.RecordArray) and not records.behavior and not records.attrs \
            and not layout.parameters:
        return {name: layout.content(name) for name in layout.fields}
    return {name: records[name] for name in records.fields}


def _column(value):
    if isinstance(value, ak.Array) or (isinstance(value, np.ndarray) and value.ndim == 1
                                       and value.flags.c_contiguous):
        return value
    arr = np.ascontiguousarray(value)
    if arr.ndim == 2 and arr.shape[1] > 0:  # what ak.from_numpy(arr, regulararray=True) makes, ~5x cheaper
        return ak.contents.RegularArray(ak.contents.NumpyArray(arr.reshape(-1)), arr.shape[1], zeros_length=len(arr))
    if arr.ndim == 2:
        return ak.from_numpy(arr, regulararray=True)
    return arr
