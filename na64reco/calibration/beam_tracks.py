"""Beam-run input of the tracker calibrations: events of raw files, tracks reconstructed with
trial conditions, and the per-track arrays the alignment, momentum-scale and efficiency fits use.

The reconstruction is consumed through its public stage function
(:func:`na64reco.reco.tracking.stage.reconstruct_tracks` with ``return_internals=True``):
hits (global positions with the conditions' alignment) and, per view (station x
coordinate), the best track's parameters and hit indices.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from na64reco.calibration.inputs import file_beam_energy
from na64reco.conditions import PlaneConditions, RunConditions
from na64reco.errors import NA64Error
from na64reco.geometry import Setup
from na64reco.io.raw import open_raw, release_data_events
from na64reco.reco.tracking.stage import reconstruct_tracks

#: half-width (mm) of the zone around a beam track whose clusters count as the track's (a
#: candidate of the plane) rather than off-track (noise or another muon): plane efficiencies,
#: noise and the pile-up split (:mod:`.plane_efficiency`, :mod:`.noise_split`)
OFF_TRACK_MM = 3.0
_TRIAL = itertools.count(1)


@dataclass
class BeamRun:
    """Events of one raw file and the beam energy (GeV) it was taken at."""

    path: Path
    events: object  # awkward record array
    beam_energy_gev: float
    truth: dict | None = None


def read_beam_runs(files, setup: Setup, beam_energy_gev: float | None = None, truth: bool = False) -> list[BeamRun]:
    """Events of ``files``; the beam energy is ``beam_energy_gev``, else the one the simulator
    recorded in the file, else the setup's (:func:`~na64reco.calibration.inputs.file_beam_energy`)."""
    if not files:
        raise NA64Error("no input files given")
    runs = []
    for path in files:
        with open_raw(path, setup=setup.name) as f:
            energy = file_beam_energy(f, path, setup, beam_energy_gev)
            # beam runs are data on a real detector: their events keep the data mark (io.raw.DATA_PARAMETER);
            # the calibrations lift it where they reconstruct, for detector constants, never a per-event output
            runs.append(BeamRun(Path(path), f.events(), float(energy),
                                f.truth() if truth and f.has_truth else None))
    if sum(len(r.events) for r in runs) == 0:
        raise NA64Error(f"no events in {', '.join(map(str, files))}")
    return runs


def trial_conditions(cond: RunConditions, *, alignment: dict[str, float] | None = None,
                     field_integrals: dict[str, float] | None = None, label: str = "trial") -> RunConditions:
    """In-memory conditions: ``cond`` with other plane alignments (mm) or field integrals.

    The tag gets a unique suffix so that no reconstruction cache mixes two trials.
    """
    planes = dict(cond.planes)
    for name, value in (alignment or {}).items():
        planes[name] = replace(planes[name], alignment=float(value))
    fields = dict(cond.field_integrals)
    fields.update(field_integrals or {})
    return replace(cond, tag=f"{cond.tag}#{label}{next(_TRIAL)}", planes=planes, field_integrals=fields)


def with_planes(cond: RunConditions, planes: dict[str, PlaneConditions], label: str) -> RunConditions:
    return replace(cond, tag=f"{cond.tag}#{label}{next(_TRIAL)}", planes={**cond.planes, **planes})


@dataclass
class ViewTracks:
    """The best track of one view in each event that has one (T tracks, npl planes)."""

    view: object  # tracks.View
    event: np.ndarray  # (T,) event index in the run
    par: np.ndarray  # (T, 3) a (mm), b (mrad), kappa (mrad)
    hit: np.ndarray  # (T, npl) hit index, -1 = none on that plane
    n_tracks: np.ndarray  # (T,) distinct candidates of the view


def design(view) -> np.ndarray:
    """(npl, npar) derivatives of the track position on each plane of ``view`` by its
    parameters: ``(1, dz, -dz if downstream)`` with dz in metres (see tracks.py)."""
    dz = np.asarray(view.dz)
    cols = [np.ones_like(dz), dz]
    if view.bend:
        cols.append(np.where(view.down, -dz, 0.0))
    return np.stack(cols, axis=1)


def reconstruct_views(run: BeamRun, setup: Setup, cond: RunConditions) -> tuple[dict, list[ViewTracks], dict]:
    """``(hits, [ViewTracks per view], stage output)`` of ``run`` with ``cond``."""
    # one plane may be missing whatever the period's rule, and none is required: the tag-and-probe
    # of the plane efficiencies needs tracks without the probed plane
    out = reconstruct_tracks(release_data_events(run.events), setup, cond, str(run.path), return_internals=True,
                             config_overrides={"max_missing_planes": 1, "view_max_missing_planes": (),
                                               "required_planes": ()})
    hits, res = out["_hits"], out["_tracks"]
    views = []
    for i, v in enumerate(out["_views"]):
        ev = np.flatnonzero(res["nh"][:, i] > 0)
        views.append(ViewTracks(v, ev, res["par"][ev, i], res["hits"][ev, i, :len(v.planes)],
                                res["n_tracks"][ev, i]))
    return hits, views, out


def nearest_hits(hits: dict, n_planes: int, event: np.ndarray, plane: np.ndarray, pred: np.ndarray):
    """Index of the hit of ``plane`` in ``event`` nearest to ``pred`` (mm) and its distance;
    -1 and inf where the plane has no hit in that event."""
    bounds = hits["plane_offsets"]
    key = event * n_planes + plane
    lo, hi = bounds[key], bounds[key + 1]
    cnt = hi - lo
    best = np.full(event.size, -1, np.int64)
    dist = np.full(event.size, np.inf)
    if cnt.sum() == 0:
        return best, dist
    owner = np.repeat(np.arange(event.size), cnt)
    idx = np.repeat(lo, cnt) + np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    d = np.abs(hits["pos"][idx] - pred[owner])
    order = np.lexsort((d, owner))
    first = order[np.concatenate([[True], owner[order][1:] != owner[order][:-1]])]
    best[owner[first]] = idx[first]
    dist[owner[first]] = d[first]
    return best, dist


def predict(view, par: np.ndarray) -> np.ndarray:
    """(T, npl) track positions (mm) on the planes of ``view`` from parameters (T, 3)."""
    r = design(view)
    return par[:, : r.shape[1]] @ r.T
