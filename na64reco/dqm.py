"""Run quality (DQM): per-spill detector quantities of raw files and the spills out of tolerance.

:func:`measure_file` reads one raw file and returns, for every spill of its ``spills``
tree (:class:`FileQuality`):

rates
    ``n_beam`` (MOT/EOT from the beam counters), ``n_triggered``, the events found in the
    ``events`` tree, triggers per beam particle;
MSADC channels (every channel of every calorimeter, veto and counter, in setup order)
    occupancy (fraction of the spill's events with a digit of the channel), pedestal (median
    over the digits of the event's own estimate, ``(ped_even + ped_odd) / 2`` from the
    pedestal samples; digits that fell back to the conditions pedestal are left out), noise
    (median r.m.s. of the pedestal samples about their parity means, ADC) and a MIP-like
    gain proxy (median amplitude of the in-time, unsaturated, pile-up-free digits, ADC);
    digits from :func:`na64reco.reco.calo.digits_of_events` (the waveform kernel);
tracker planes
    fraction of the spill's events with at least one hit on the plane (an efficiency proxy
    in beam runs) and hits per event, from :func:`na64reco.reco.tracking.clusters.event_hits`.

:func:`assess` compares every quantity of every spill with its median over all spills
given (robust statistics, tolerances of ``calib/dqm/tolerances.yaml``, see that file) and
returns the bad spills with their reasons.  :func:`write_bad_spills` /
:func:`load_bad_spills` store and read that list; ``na64reco run --bad-spills`` drops
those spills' events and leaves them out of the MOT/EOT (:mod:`na64reco.exposure`).

Only detector quantities per spill are produced, never a per-event physics quantity, so
data files are read like simulation (the blinding mark is lifted, see
:data:`na64reco.io.raw.DATA_PARAMETER`).
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from na64reco.bad_spills import BAD_SPILLS_SCHEMA_VERSION, BadSpillsError, load_bad_spills  # noqa: F401 (re-exported)
from na64reco.config import load_yaml
from na64reco.errors import NA64Error
from na64reco.geometry import Setup, period_of_run
from na64reco.io.distinct import check_distinct
from na64reco.io.raw import open_raw, release_data_events
from na64reco.reco.calo import digits_of_events, flat_digits
from na64reco.reco.tracking.clusters import PlaneTables, event_hits
from na64reco.reco.tracking.config import load_tracking_config
from na64reco.reco.waveform import FLAG_PEDESTAL_FALLBACK, FLAG_PILEUP, FLAG_SATURATED, waveform_config
from na64reco.resources import calib_dir
from na64reco.stats.robust import MAD_TO_SIGMA

TOLERANCES_SCHEMA_VERSION = 1
MEDIAN_ERROR = 1.2533  # error of the median / (sigma / sqrt(n)) for a Gaussian
MIN_SPILLS = 3  # spills with a value needed to judge a channel or plane (a median of 2 is their mean)


# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tolerances:
    """``calib/dqm/tolerances.yaml`` (units in that file)."""

    source: str
    n_sigma: float
    trigger_per_beam_floor: float
    missing_events_max: int
    calo_min_entries: int
    occupancy_floor: float
    pedestal_floor_adc: float
    noise_floor_adc: float
    gain_min_entries: int
    gain_ratio_floor: float
    tracker_min_events: int
    hit_fraction_floor: float
    hits_per_event_floor: float


def default_tolerances_path() -> Path:
    return calib_dir() / "dqm" / "tolerances.yaml"


def load_tolerances(path=None) -> Tolerances:
    path = Path(path) if path is not None else default_tolerances_path()
    node = load_yaml(path, schema_version=TOLERANCES_SCHEMA_VERSION)
    r, c, t = node.node("rates"), node.node("calo"), node.node("tracker")
    # a misspelt or misplaced tolerance is an error, not a tolerance silently not applied
    node.check_keys({"schema_version", "n_sigma", "rates", "calo", "tracker"})
    r.check_keys({"trigger_per_beam_floor", "missing_events_max"})
    c.check_keys({"min_entries", "occupancy_floor", "pedestal_floor_adc", "noise_floor_adc", "gain_min_entries",
                  "gain_ratio_floor"})
    t.check_keys({"min_events", "hit_fraction_floor", "hits_per_event_floor"})
    return Tolerances(
        str(path), node.number("n_sigma", minimum=0.0),
        r.number("trigger_per_beam_floor", minimum=0.0), r.integer("missing_events_max", minimum=0),
        c.integer("min_entries", minimum=1), c.number("occupancy_floor", minimum=0.0),
        c.number("pedestal_floor_adc", minimum=0.0), c.number("noise_floor_adc", minimum=0.0),
        c.integer("gain_min_entries", minimum=1), c.number("gain_ratio_floor", minimum=0.0),
        t.integer("min_events", minimum=1), t.number("hit_fraction_floor", minimum=0.0),
        t.number("hits_per_event_floor", minimum=0.0),
    )


# ----------------------------------------------------------------------------------------
@dataclass
class FileQuality:
    """Per-spill quantities of one raw file (S spills, C MSADC channels, P tracker planes)."""

    path: str
    setup: str
    run: int
    is_data: bool
    spill: np.ndarray  # (S,) spill numbers
    n_beam: np.ndarray  # (S,)
    n_triggered: np.ndarray  # (S,)
    n_events: np.ndarray  # (S,) events of the spill in the events tree
    channels: list[tuple[str, int]]  # (C,) (detector, channel)
    digits: np.ndarray  # (S, C) digits
    pedestal: np.ndarray  # (S, C) ADC, NaN without digits
    pedestal_entries: np.ndarray  # (S, C)
    noise: np.ndarray  # (S, C) ADC
    gain: np.ndarray  # (S, C) ADC (MIP-like median amplitude)
    gain_entries: np.ndarray  # (S, C)
    gain_width: np.ndarray  # (S, C) ADC, 1.4826 MAD of those amplitudes
    planes: list[str]  # (P,)
    plane_events: np.ndarray  # (S, P) events with >= 1 hit on the plane
    plane_hits: np.ndarray  # (S, P) hits

    @property
    def occupancy(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.digits / self.n_events[:, None]

    @property
    def trigger_per_beam(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.n_triggered / self.n_beam

    @property
    def hit_fraction(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.plane_events / self.n_events[:, None]

    @property
    def hits_per_event(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.plane_hits / self.n_events[:, None]


def channel_list(setup: Setup) -> tuple[list[tuple[str, int]], np.ndarray]:
    """Every MSADC channel as (detector, channel) in setup order, and the (256, width) table
    of their index in that list (-1 for no channel)."""
    width = max(d.n_channels for d in setup.calorimeters.values())
    index = np.full((256, width), -1, np.int64)
    names = []
    for det in setup.calorimeters.values():
        index[det.id, : det.n_channels] = np.arange(len(names), len(names) + det.n_channels)
        names += [(det.name, c) for c in range(det.n_channels)]
    return names, index


def group_median(key: np.ndarray, value: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """Median of ``value`` per integer ``key`` in [0, n_keys) (NaN where none) and the counts."""
    key = np.asarray(key, np.int64)
    value = np.asarray(value, float)
    order = np.lexsort((value, key))
    v = value[order]
    counts = np.bincount(key, minlength=n_keys)
    start = np.cumsum(counts) - counts
    med = np.full(n_keys, np.nan)
    has = counts > 0
    lo, hi = start[has] + (counts[has] - 1) // 2, start[has] + counts[has] // 2
    med[has] = 0.5 * (v[lo] + v[hi])
    return med, counts


def _pedestal_noise(adc: np.ndarray, n_ped: int) -> np.ndarray:
    """r.m.s. (ADC) of each digit's first ``n_ped`` samples about their even/odd means (two
    means fitted: divided by ``n_ped - 2``, an unbiased variance)."""
    x = adc[:, :n_ped].astype(float)
    dev = np.concatenate([x[:, p::2] - x[:, p::2].mean(axis=1, keepdims=True) for p in (0, 1)], axis=1)
    return np.sqrt((dev**2).sum(axis=1) / max(n_ped - 2, 1))


def measure_files(paths, *, calib_tag: str | None = None) -> list[FileQuality]:
    """:func:`measure_file` of each of ``paths``, after refusing two that hold the same
    events (:func:`na64reco.io.distinct.check_distinct`: a spill counted twice)."""
    check_distinct(paths, "dqm inputs")
    return [measure_file(path, calib_tag=calib_tag) for path in paths]


def measure_file(path, *, calib_tag: str | None = None) -> FileQuality:
    """Per-spill quantities of the raw file ``path`` (see the module docstring)."""
    with open_raw(path) as raw:
        setup = raw.run_setup()  # (errors name the file)
        cond = raw.run_conditions(setup, calib_tag)
        spills = raw.spills()
        # DQM outputs detector quantities per spill, never a per-event physics quantity: the
        # data mark (blinding, io.raw.DATA_PARAMETER) is lifted as for the calibrations
        events = release_data_events(raw.events())
        is_data, run = not raw.has_truth, raw.run
    numbers = np.asarray(spills["spill"]).astype(np.int64)
    order = np.argsort(numbers)
    ev_spill = np.asarray(events["spill"]).astype(np.int64)
    pos = np.clip(np.searchsorted(numbers[order], ev_spill), 0, max(len(numbers) - 1, 0))
    if len(ev_spill) and (len(numbers) == 0 or np.any(numbers[order][pos] != ev_spill)):
        missing = sorted(set(ev_spill.tolist()) - set(numbers.tolist()))
        raise NA64Error(f"{path}: events of spill(s) {missing[:5]} that the spills tree does not list")
    s_idx = order[pos] if len(numbers) else pos  # spill index (spills-tree order) of each event
    n_sp = len(numbers)
    n_events = np.bincount(s_idx, minlength=n_sp)
    channels, chan_index = channel_list(setup)
    n_ch = len(channels)

    digits, ev, _ = digits_of_events(events, setup, cond, str(path))
    _, _, _, adc = flat_digits(events)
    col = chan_index[digits.det, digits.chan]
    key = s_idx[ev] * n_ch + col
    size = n_sp * n_ch
    count = np.bincount(key, minlength=size)
    own = (digits.flags & FLAG_PEDESTAL_FALLBACK) == 0
    ped, ped_n = group_median(key[own], 0.5 * (digits.ped_even[own] + digits.ped_odd[own]), size)
    noise, _ = group_median(key, _pedestal_noise(adc, waveform_config(setup).pedestal_samples), size)
    mip = digits.good & ((digits.flags & (FLAG_PILEUP | FLAG_SATURATED)) == 0) & np.isfinite(digits.amplitude)
    gain, gain_n = group_median(key[mip], digits.amplitude[mip], size)
    mad, _ = group_median(key[mip], np.abs(digits.amplitude[mip] - gain[key[mip]]), size)

    cfg = load_tracking_config(setup)
    tables = PlaneTables(setup, cond)
    hits = event_hits(events, tables, threshold_sigma=cfg.apv_threshold_sigma, drift_t0=cfg.drift_t0,
                      source=str(path))
    per = np.diff(hits["plane_offsets"]).reshape(len(events), tables.n_planes)
    p_events = np.zeros((n_sp, tables.n_planes), np.int64)
    p_hits = np.zeros((n_sp, tables.n_planes), np.int64)
    np.add.at(p_events, s_idx, per > 0)
    np.add.at(p_hits, s_idx, per)

    def table(a):
        return a.reshape(n_sp, n_ch)

    return FileQuality(
        str(path), setup.name, int(run), is_data, numbers, np.asarray(spills["n_beam"]).astype(np.int64),
        np.asarray(spills["n_triggered"]).astype(np.int64), n_events, channels, table(count), table(ped),
        table(ped_n), table(noise), table(gain), table(gain_n), table(MAD_TO_SIGMA * mad),
        [p.name for p in setup.planes], p_events, p_hits)


# ----------------------------------------------------------------------------------------
@dataclass
class Assessment:
    """Per-spill verdict over all files: ``bad`` lists ``{file, run, spill, n_beam, reasons}``."""

    files: list[FileQuality]
    tolerances: Tolerances
    bad: list[dict] = field(default_factory=list)
    #: quantity -> (S_total, K) array of the deviations in units of the tolerance band (|dev|/band)
    pulls: dict[str, np.ndarray] = field(default_factory=dict)
    medians: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def judged(self) -> bool:
        """False with fewer than :data:`MIN_SPILLS` spills: nothing could be judged (no bad spill is no verdict)."""
        return sum(len(f.spill) for f in self.files) >= MIN_SPILLS


def judge(x: np.ndarray, err: np.ndarray, valid: np.ndarray, floor: float, n_sigma: float):
    """Deviation of each spill (rows) from the median over spills, per column.

    Returns ``(pull, median)``: ``pull = |x - median| / max(floor, n_sigma * sigma)``, with
    ``sigma = max(err, 1.4826 MAD over spills)``; > 1 is out of tolerance.  NaN where a
    value is not valid or its column has fewer than :data:`MIN_SPILLS` valid spills.
    """
    x = np.where(valid, x, np.nan)
    enough = np.sum(valid, axis=0) >= MIN_SPILLS
    with np.errstate(invalid="ignore"), _quiet_nan():
        med = np.nanmedian(x, axis=0)
        mad = np.nanmedian(np.abs(x - med), axis=0)
        band = np.maximum(floor, n_sigma * np.maximum(err, MAD_TO_SIGMA * mad))
        pull = np.abs(x - med) / band
    pull[:, ~enough] = np.nan
    return pull, med


@contextmanager
def _quiet_nan():
    """Silence numpy's "All-NaN slice" warnings (columns without any value are expected)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _binomial_error(p0: np.ndarray, n: np.ndarray) -> np.ndarray:
    n = np.maximum(np.asarray(n, float), 1.0)
    p = np.clip(p0, 1.0 / n, 1.0 - 1.0 / n)
    return np.sqrt(p * (1.0 - p) / n)


def assess(files: list[FileQuality], tol: Tolerances) -> Assessment:
    """The spills out of tolerance among all spills of ``files`` (one setup)."""
    if not files:
        raise NA64Error("no input files given")
    setups = {f.setup for f in files}
    if len(setups) > 1:
        raise NA64Error(f"files of several setups ({', '.join(sorted(setups))}): run dqm once per setup")
    periods = {}
    for f in files:
        period = period_of_run(f.setup, f.run)
        periods.setdefault(period.name if period else "", []).append(f"{Path(f.path).name} (run {f.run})")
    if len(periods) > 1:  # (their tracker planes and tolerances of occupancy differ)
        listed = "; ".join(f"{name or 'no period'}: {', '.join(names)}" for name, names in sorted(periods.items()))
        raise NA64Error(f"files of several run periods of setup {files[0].setup!r} ({listed}): run dqm once per "
                        "period")
    cat = {name: np.concatenate([getattr(f, name) for f in files]) for name in (
        "n_beam", "n_triggered", "n_events", "digits", "pedestal", "pedestal_entries", "noise", "gain",
        "gain_entries", "gain_width", "plane_events", "plane_hits", "occupancy", "trigger_per_beam",
        "hit_fraction", "hits_per_event")}
    out = Assessment(files, tol)
    ns = tol.n_sigma
    n_ev = cat["n_events"][:, None]
    with np.errstate(invalid="ignore", divide="ignore"), _quiet_nan():
        # rates: triggers per beam particle
        tpb = cat["trigger_per_beam"][:, None]
        p0 = np.nanmedian(tpb, axis=0)
        out.pulls["trigger_per_beam"], out.medians["trigger_per_beam"] = judge(
            tpb, _binomial_error(p0, cat["n_beam"][:, None]), cat["n_beam"][:, None] > 0,
            tol.trigger_per_beam_floor, ns)
        # calorimeter channels
        occ = cat["occupancy"]
        p0 = np.nanmedian(np.where(n_ev > 0, occ, np.nan), axis=0)
        out.pulls["occupancy"], out.medians["occupancy"] = judge(
            occ, _binomial_error(p0, n_ev), np.broadcast_to(n_ev > 0, occ.shape), tol.occupancy_floor, ns)
        enough = cat["pedestal_entries"] >= tol.calo_min_entries
        noise = cat["noise"]
        out.pulls["pedestal"], out.medians["pedestal"] = judge(
            cat["pedestal"], MEDIAN_ERROR * noise / np.sqrt(np.maximum(cat["pedestal_entries"], 1)), enough,
            tol.pedestal_floor_adc, ns)
        enough_n = cat["digits"] >= tol.calo_min_entries
        out.pulls["noise"], out.medians["noise"] = judge(
            noise, noise / np.sqrt(2.0 * np.maximum(cat["digits"], 1)), enough_n, tol.noise_floor_adc, ns)
        g_ok = cat["gain_entries"] >= tol.gain_min_entries
        g_med = np.nanmedian(np.where(g_ok, cat["gain"], np.nan), axis=0)
        ratio = cat["gain"] / g_med
        out.medians["gain"] = g_med
        err = MEDIAN_ERROR * cat["gain_width"] / np.sqrt(np.maximum(cat["gain_entries"], 1)) / g_med
        out.pulls["gain_ratio"], out.medians["gain_ratio"] = judge(ratio, err, g_ok & (g_med > 0),
                                                                  tol.gain_ratio_floor, ns)
        # tracker planes
        t_ok = np.broadcast_to(n_ev >= tol.tracker_min_events, cat["hit_fraction"].shape)
        hf = cat["hit_fraction"]
        p0 = np.nanmedian(np.where(t_ok, hf, np.nan), axis=0)
        out.pulls["hit_fraction"], out.medians["hit_fraction"] = judge(
            hf, _binomial_error(p0, n_ev), t_ok, tol.hit_fraction_floor, ns)
        hpe = cat["hits_per_event"]
        out.pulls["hits_per_event"], out.medians["hits_per_event"] = judge(
            hpe, np.sqrt(np.maximum(np.nanmedian(np.where(t_ok, hpe, np.nan), axis=0), 1.0 / n_ev) / n_ev), t_ok,
            tol.hits_per_event_floor, ns)
    values = {"trigger_per_beam": cat["trigger_per_beam"][:, None], "occupancy": occ, "pedestal": cat["pedestal"],
              "noise": noise, "gain_ratio": ratio, "hit_fraction": hf, "hits_per_event": hpe}
    units = {"pedestal": " ADC", "noise": " ADC"}
    channels = files[0].channels
    planes = files[0].planes
    row = 0
    for f in files:
        for i, spill in enumerate(f.spill):
            reasons = []
            missing = int(f.n_triggered[i] - f.n_events[i])
            if abs(missing) > tol.missing_events_max:
                reasons.append(f"events tree holds {int(f.n_events[i])} events, spills tree says "
                               f"{int(f.n_triggered[i])} were triggered")
            for q, pull in out.pulls.items():
                for k in np.flatnonzero(pull[row] > 1.0):
                    what = ("spill" if q == "trigger_per_beam" else
                            f"{planes[k]}" if q in ("hit_fraction", "hits_per_event") else
                            f"{channels[k][0]} channel {channels[k][1]}")
                    u = units.get(q, "")
                    reasons.append(f"{what}: {q} {values[q][row, k]:.4g}{u}, median over spills "
                                   f"{out.medians[q][k]:.4g}{u}")
            if reasons:
                out.bad.append({"file": f.path, "run": f.run, "spill": int(spill), "n_beam": int(f.n_beam[i]),
                                "reasons": reasons})
            row += 1
    return out


# ----------------------------------------------------------------------------------------
def write_bad_spills(assessment: Assessment, path) -> Path:
    """The bad-spill list as YAML (``schema_version``, ``tolerances``, ``files``, ``judged``: False when
    too few spills were given to judge any, ``spills``)."""
    data = {"schema_version": BAD_SPILLS_SCHEMA_VERSION, "tolerances": assessment.tolerances.source,
            "files": [f.path for f in assessment.files], "judged": assessment.judged, "spills": assessment.bad}
    path = Path(path)
    path.write_text(yaml.safe_dump(data, sort_keys=False, width=200))
    return path


def summary(assessment: Assessment) -> dict:
    """The JSON summary: inputs, tolerances, per-spill rates, per-channel and per-plane tables."""
    files = assessment.files
    f0 = files[0]

    def rows(name):
        return np.concatenate([getattr(f, name) for f in files]).tolist()

    def clean(a):
        a = np.asarray(a, float)
        return [[None if not np.isfinite(v) else round(float(v), 5) for v in r] for r in np.atleast_2d(a)]

    bad = {(b["file"], b["spill"]) for b in assessment.bad}
    return {
        "setup": f0.setup, "tolerances": assessment.tolerances.source,
        "files": [{"file": f.path, "run": f.run, "data": f.is_data, "spills": len(f.spill),
                   "n_beam": int(f.n_beam.sum()), "events": int(f.n_events.sum())} for f in files],
        "n_spills": int(sum(len(f.spill) for f in files)), "n_bad_spills": len(assessment.bad),
        "judged": assessment.judged,
        "n_beam": int(sum(f.n_beam.sum() for f in files)),
        "n_beam_good": int(sum(f.n_beam[i] for f in files for i, s in enumerate(f.spill)
                               if (f.path, int(s)) not in bad)),
        "spills": [{"file": f.path, "run": f.run, "spill": int(s), "n_beam": int(f.n_beam[i]),
                    "n_triggered": int(f.n_triggered[i]), "events": int(f.n_events[i]),
                    "trigger_per_beam": float(f.trigger_per_beam[i]), "bad": (f.path, int(s)) in bad}
                   for f in files for i, s in enumerate(f.spill)],
        "bad_spills": assessment.bad,
        "calo": {"channels": [f"{d}:{c}" for d, c in f0.channels],
                 "occupancy": clean(rows("occupancy")), "pedestal_adc": clean(rows("pedestal")),
                 "noise_adc": clean(rows("noise")), "gain_proxy_adc": clean(rows("gain")),
                 "gain_proxy_entries": rows("gain_entries")},
        "tracker": {"planes": f0.planes, "hit_fraction": clean(rows("hit_fraction")),
                    "hits_per_event": clean(rows("hits_per_event"))},
    }


def write_summary(assessment: Assessment, path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(summary(assessment), indent=1))
    return path
