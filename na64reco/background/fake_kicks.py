"""Fake momentum kicks of beam muons at the nominal tracker noise, by forced noise.

A 160 GeV beam muon reconstructed below 80 GeV after the tracking cuts needs in-time noise
clusters on the bend-view planes of the outgoing spectrometer (MS2) lined up with its true
hits.  :func:`study` measures the rate exactly (:mod:`na64reco.sim.forced_noise`): the noise
of a region R (the MS2 bend-view planes, over the simulated times whose reconstructed hit
time can pass the track search's hit-time cut) is replaced by exactly m clusters per event,
m = 0..M; each sample gives the fraction of fakes and of tracked muons at that m, and the
Poisson weights of m at the nominal noise combine them
(:func:`na64reco.background.forced_noise_ratio`).

The out-of-time beam muons (:mod:`na64reco.sim.occupancy`) are forced the same way: exactly
k of them in the near times N (:func:`near_times`: the simulated times whose hits can pass
the hit-time cut on some tracker plane, without the in-time window of the mixture's
``pileup`` process), so a stratum (m, k) measures G_{m,k} and the combination is
``sum_{m,k} Poisson(m; Lambda_R) Poisson(k; lambda_N) G_{m,k}``; a stratum with k = None
leaves the pile-up nominal (it measures ``sum_k Poisson(k; lambda_N) G_{m,k}``).

Quantities per sample, on beam muons with true p_out > ``HARD_P_OUT`` (muons the spectrometer
should measure near the beam energy): ``tracked`` passes the selection's tracking cuts
(:data:`TRACKING_CUTS`), ``fake`` in addition has reconstructed p_out inside the signal box.
"""

from __future__ import annotations

from pathlib import Path

import hepunits as u
import numpy as np

from na64reco.conditions import load_conditions
from na64reco.errors import ConfigError
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw
from na64reco.reco.tracking import reconstruct_tracks
from na64reco.reco.tracking.config import load_tracking_config
from na64reco.reco.tracking.tracks import hit_time_windows
from na64reco.selection.cuts import Columns, cut_mask, region_mask
from na64reco.selection.schema import load_selection
from na64reco.sim.digitize import PlaneTables
from na64reco.sim.forced_noise import ForcedNoise, resolve
from na64reco.sim.generate import simulate
from na64reco.sim.occupancy import ForcedPileup, expected_near, near_segments

#: a run of each NA64mu run period (calib/setups/na64mu.yaml, ``periods``)
PERIOD_RUNS = {"2022": 1, "2023": 10001}
#: the cuts of ``selections/na64mu_invisible.yaml`` that use the trackers only
TRACKING_CUTS = ("single_track_in", "p_in_window", "single_track_out", "both_views_out", "no_pileup_out", "chi2_out",
                 "track_match")
#: beam muons whose true outgoing momentum is above this are "should be measured high"
HARD_P_OUT = 100.0  # GeV (reco unit)
#: how far (ns) the simulated time of an APV cluster may lie before the earliest reconstructed
#: time the hit-time cut accepts, or after the latest one plus one sample spacing (the pulse
#: start is reconstructed within the 25 ns clock phase, plus its error: a few ns for MIP
#: clusters); checked in tests/test_forced_noise.py (no cluster simulated outside the region
#: is ever in time)
APV_TIME_MARGIN = 10.0
STRAW_TIME_MARGIN = 10.0
#: bins (GeV) of the reconstructed p_out of the tracked hard muons, kept per sample, and of
#: the same scaled to the beam energy, ``E_beam p_out(reco) / p_out(true)`` (the tail fits of
#: the mis-measurement: its sideband holds no real energy loss, which the cut on the true p_out
#: truncates at HARD_P_OUT in the unscaled spectrum)
P_OUT_EDGES = np.arange(0.0, 201.0, 2.0)


def bend_region(setup, conditions, station: str = "MS2",
                sides=("upstream", "downstream")) -> dict[str, tuple[float, float]]:
    """Region R: the bend-view planes of ``station`` on ``sides`` of its magnet, over the
    simulated noise times whose hits can be in time for the track search (its hit-time
    windows, widened by the margins and clipped to the planes' noise windows).

    The default is both sides: the fake kicks of the forced samples use noise or ghost hits
    upstream (a kinked muon whose upstream segment is rebuilt from a noise hit) as well as
    downstream (docs/periods.md).  Noise elsewhere is simulated as usual, so the estimate
    stays exact whatever R is: R only decides which noise is sampled efficiently."""
    cfg = load_tracking_config(setup)
    lo, hi = hit_time_windows(setup, conditions, cfg.hit_time_sigma)
    ro = setup.readout
    region = {}
    for p in setup.planes:
        if p.station != station or p.measures != "x" or p.side not in sides:
            continue
        if p.type == "straw":
            w = ro.straw_noise_window
            a, b = lo[p.index] - STRAW_TIME_MARGIN, hi[p.index] + STRAW_TIME_MARGIN
        else:
            w = ro.apv_noise_window
            a, b = lo[p.index] - APV_TIME_MARGIN, hi[p.index] + ro.apv_sample_spacing + APV_TIME_MARGIN
        region[p.name] = (max(a, w[0]), min(b, w[1]))
    return region


def near_times(setup, conditions) -> list[tuple[float, float]]:
    """N: the simulated times (ns) of an out-of-time beam muon whose hits can be in time for the
    track search on some tracker plane (the union of the planes' hit-time windows widened by
    the margins of :func:`bend_region`; a muon's crossings carry its own time), inside
    ``trackers.beam_pileup_window`` and without the in-time window ``beam.pileup_window``."""
    cfg = load_tracking_config(setup)
    lo, hi = hit_time_windows(setup, conditions, cfg.hit_time_sigma)
    ro = setup.readout
    first, last = np.inf, -np.inf
    for p in setup.planes:
        if p.type == "straw":
            a, b = lo[p.index] - STRAW_TIME_MARGIN, hi[p.index] + STRAW_TIME_MARGIN
        else:
            a, b = lo[p.index] - APV_TIME_MARGIN, hi[p.index] + ro.apv_sample_spacing + APV_TIME_MARGIN
        first, last = min(first, a), max(last, b)
    w = ro.beam_pileup_window
    return near_segments(setup, ForcedPileup.of([(max(first, w[0]), min(last, w[1]))], 0))


def tracking_cuts_and_box(cols: Columns, selection) -> tuple[np.ndarray, np.ndarray]:
    """Per event: passes the tracking cuts of ``selection`` (:data:`TRACKING_CUTS`), and has its
    reconstructed p_out inside the signal box; ``cols`` the tracking columns."""
    cuts = {c.name: c for c in selection.cuts}
    ok = np.ones(len(cols["p_out"]), bool)
    for name in TRACKING_CUTS:
        ok &= cut_mask(cols, cuts[name])
    return ok, region_mask(cols, selection.signal_box)


def count(path, setup, conditions, selection) -> dict:
    """Beam muons, tracked and fake counts of a simulated file (see the module doc)."""
    raw = open_raw(path)
    out = reconstruct_tracks(raw.events(), setup, conditions, source=str(path))
    out = Columns(None, {k: np.asarray(v) for k, v in out.items()})  # the tracking columns, for the cuts
    true_p_out = np.asarray(raw.truth()["p_out"])
    hard = true_p_out > HARD_P_OUT
    ok, box = tracking_cuts_and_box(out, selection)
    tracked = hard & ok
    fake = tracked & box
    p_out = np.asarray(out["p_out"])[tracked]
    hist = np.histogram(p_out, bins=P_OUT_EDGES)[0]
    scaled = np.histogram(p_out * (setup.beam.energy / u.GeV) / true_p_out[tracked], bins=P_OUT_EDGES)[0]
    return {"events": int(hard.size), "hard": int(hard.sum()), "tracked": int(tracked.sum()),
            "fake": int(fake.sum()), "p_out_counts": hist.tolist(), "scaled_p_out_counts": scaled.tolist()}


def _sample(path: str, setup_name: str, run: int, n: int, seed: int, windows: dict, m: int, near, k,
            selection: str, keep: bool = True) -> dict:
    """Simulate (unless the file exists) and count one forced sample (a dask task); the counts
    are kept beside it (``.counts.json``, reused), the file itself only with ``keep``."""
    import json

    done = Path(path).with_suffix(".counts.json")
    if done.exists():
        return json.loads(done.read_text())
    setup = load_setup(setup_name, run=run)
    cond = load_conditions(setup, run)
    if not Path(path).exists():
        tmp = Path(path).with_suffix(".part.root")
        simulate(setup, n, seed, run, tmp, process="beam", trigger="calibration",
                 forced_noise=ForcedNoise.of(windows, m),
                 forced_pileup=None if k is None else ForcedPileup.of(near, k))
        tmp.rename(path)
    c = count(path, setup, cond, load_selection(selection))
    done.write_text(json.dumps(c))
    if not keep:
        Path(path).unlink()
    return c


def study(run: int, strata, events: dict, seed: int, workdir, *, setup_name: str = "na64mu",
          selection: str = "na64mu_invisible", sides=("upstream", "downstream"), client=None,
          part_events: int = 500_000, keep_files: bool = True, progress=None) -> dict:
    """Forced samples of beam muons for ``run`` (calibration trigger: every muon written), one
    per stratum ``(m, k)`` of ``strata``: exactly m noise clusters in the region R
    (:func:`bend_region`) and, unless k is None, exactly k out-of-time beam muons in the near
    times N (:func:`near_times`).  ``events`` maps a stratum (or ``"default"``) to its number
    of muons; a forced-pile-up stratum is simulated in parts of at most ``part_events``
    (files with their own seeds), a nominal-pile-up one in one file (the names of the
    forced-noise samples of the previous pass, reused).  Files already in ``workdir`` are
    reused; with a dask ``client`` the parts run as its tasks.  Returns per-stratum counts,
    the regions and their nominal means ``expected`` (Lambda_R) and ``expected_pileup``
    (lambda_N)."""
    setup = load_setup(setup_name, run=run)
    cond = load_conditions(setup, run)
    windows = bend_region(setup, cond, sides=tuple(sides))
    near = near_times(setup, cond)
    tables = PlaneTables.of(setup, cond)
    expected = resolve(ForcedNoise.of(windows, 0), setup, tables.noise_hits, tables.noise_t_first,
                       tables.noise_t_last).expected
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    planes = "_".join(sorted(windows))
    jobs = []
    for m, k in strata:
        n = int(events.get((m, k), events.get("default", 0)))
        if k is None:
            parts = [(workdir / f"forced_run{run}_{planes}_m{m}_{n}_{seed}.root", n, seed + 1000 * m)]
        else:
            sizes = [min(part_events, n - i) for i in range(0, n, part_events)]
            parts = [(workdir / f"forced_run{run}_{planes}_m{m}_k{k}_{n}_{seed}_p{j}.root", s,
                      seed + 1000 * m + 100 * (k + 1) + j) for j, s in enumerate(sizes)]
        if not 0 <= m < 1000 or not (k is None or 0 <= k < 9) or len(parts) > 100:
            raise ConfigError(f"forced samples: stratum {(m, k)} in {len(parts)} parts is outside the seed scheme "
                              f"(m < 1000, k < 9, at most 100 parts: raise part_events)")
        jobs += [((m, k), (str(p), setup_name, run, s, sd, windows, m, near, k, selection,
                                      keep_files or k is None)) for p, s, sd in parts]
    if client is not None:
        futures = client.map(_sample, *zip(*(a for _, a in jobs), strict=True), pure=False)
        counted = client.gather(futures)
    else:
        counted = [_sample(*a) for _, a in jobs]
    rows = {}
    for (stratum, _), c in zip(jobs, counted, strict=True):
        row = rows.setdefault(stratum, {"count": stratum[0], "pileup": stratum[1], "events": 0, "hard": 0,
                                        "tracked": 0, "fake": 0})
        for key in ("events", "hard", "tracked", "fake"):
            row[key] += c[key]
        for key in ("p_out_counts", "scaled_p_out_counts"):
            if row.get(key, 0) is None or c.get(key) is None:  # counts of a pass without it
                row[key] = None
            else:
                row[key] = [a + b for a, b in zip(row.get(key) or [0] * len(c[key]), c[key], strict=True)]
    rows = [rows[s] for s in strata]
    if progress:
        for r in rows:
            progress(r)
    return {"run": run, "period": setup.period, "sides": list(sides),
            "region": {k: [float(a), float(b)] for k, (a, b) in windows.items()},
            "near": [list(x) for x in near], "expected": expected,
            "expected_pileup": expected_near(setup, ForcedPileup.of(near, 0)), "rows": rows,
            "p_out_edges": P_OUT_EDGES.tolist(), "hard_p_out_gev": HARD_P_OUT,
            "beam_energy_gev": setup.beam.energy / u.GeV}
