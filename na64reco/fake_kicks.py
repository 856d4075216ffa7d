"""Fake momentum kicks of beam muons at the nominal tracker noise, by forced noise.

A 160 GeV beam muon reconstructed below 80 GeV after the tracking cuts needs in-time noise
clusters on the bend-view planes of the outgoing spectrometer (MS2) lined up with its true
hits.  :func:`study` measures the rate exactly (:mod:`na64reco.sim.forced_noise`): the noise
of a region R (the MS2 bend-view planes, over the simulated times whose reconstructed hit
time can pass the track search's hit-time cut) is replaced by exactly m clusters per event,
m = 0..M; each sample gives the fraction of fakes and of tracked muons at that m, and the
Poisson weights of m at the nominal noise combine them
(:func:`na64reco.background.forced_noise_ratio`).

Quantities per sample, on beam muons with true p_out > ``HARD_P_OUT`` (muons the spectrometer
should measure near the beam energy): ``tracked`` passes the selection's tracking cuts
(:data:`TRACKING_CUTS`), ``fake`` in addition has reconstructed p_out inside the signal box.
"""

from __future__ import annotations

from pathlib import Path

import hepunits as u
import numpy as np

from na64reco.conditions import load_conditions
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

#: a run of each NA64mu run period (calib/setups/na64mu.yaml, ``periods``)
PERIOD_RUNS = {"2022": 1, "2023": 10001}
#: the cuts of ``selections/na64mu_invisible.yaml`` that use the trackers only
TRACKING_CUTS = ("single_track_in", "p_in_window", "single_track_out", "no_pileup_out", "chi2_out", "track_match")
#: beam muons whose true outgoing momentum is above this are "should be measured high"
HARD_P_OUT = 100.0  # GeV (reco unit)
#: how far (ns) the simulated time of an APV cluster may lie before the earliest reconstructed
#: time the hit-time cut accepts, or after the latest one plus one sample spacing (the pulse
#: start is reconstructed within the 25 ns clock phase, plus its error: a few ns for MIP
#: clusters); checked in tests/test_forced_noise.py (no cluster simulated outside the region
#: is ever in time)
APV_TIME_MARGIN = 10.0
STRAW_TIME_MARGIN = 10.0


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


def count(path, setup, conditions, selection) -> dict:
    """Beam muons, tracked and fake counts of a simulated file (see the module doc)."""
    raw = open_raw(path)
    out = reconstruct_tracks(raw.events(), setup, conditions, source=str(path))
    out = Columns(None, {k: np.asarray(v) for k, v in out.items()})  # the tracking columns, for the cuts
    hard = np.asarray(raw.truth()["p_out"]) > HARD_P_OUT
    cuts = {c.name: c for c in selection.cuts}
    tracked = hard.copy()
    for name in TRACKING_CUTS:
        tracked &= cut_mask(out, cuts[name])
    fake = tracked & region_mask(out, selection.signal_box)
    return {"events": int(hard.size), "hard": int(hard.sum()), "tracked": int(tracked.sum()),
            "fake": int(fake.sum())}


def study(run: int, counts, events: int | dict[int, int], seed: int, workdir, *, setup_name: str = "na64mu",
          selection: str = "na64mu_invisible", sides=("upstream", "downstream"), progress=None) -> dict:
    """Forced-noise samples m = 0..max(counts) of ``events`` beam muons each (an int, or a
    dict m -> events, key -1 for the others; calibration trigger: every muon written) for
    ``run``; returns the per-sample counts, the region and its nominal mean ``expected``.
    Samples already in ``workdir`` are reused."""
    setup = load_setup(setup_name, run=run)
    cond = load_conditions(setup, run)
    sel = load_selection(selection)
    windows = bend_region(setup, cond, sides=tuple(sides))
    tables = PlaneTables.of(setup, cond)
    expected = resolve(ForcedNoise.of(windows, 0), setup, tables.noise_hits, tables.noise_t_first,
                       tables.noise_t_last).expected
    rows = []
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for m in range(int(max(counts)) + 1):
        n = int(events.get(m, events.get(-1, 0)) if isinstance(events, dict) else events)
        path = workdir / f"forced_run{run}_{'_'.join(sorted(windows))}_m{m}_{n}_{seed}.root"
        if not path.exists():
            simulate(setup, n, seed + 1000 * m, run, path, process="beam", trigger="calibration",
                     forced_noise=ForcedNoise.of(windows, m))
        row = {"count": m, **count(path, setup, cond, sel)}
        rows.append(row)
        if progress:
            progress(row)
    return {"run": run, "period": setup.period, "sides": list(sides),
            "region": {k: [float(a), float(b)] for k, (a, b) in windows.items()},
            "expected": expected, "rows": rows, "hard_p_out_gev": HARD_P_OUT,
            "beam_energy_gev": setup.beam.energy / u.GeV}
