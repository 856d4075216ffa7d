"""Reconstructed APV hit times of an out-of-time beam pile-up muon against its true time (issue 9).

A forced (0, 1) sample (one pile-up muon "B" in the near times N, no forced noise cluster) of a
period is simulated with the pile-up truth (``simulate(..., true_crossings=)``) and reconstructed
with all hits kept (``reconstruct_tracks(return_internals=True)``).  Every true APV crossing of B
(and of the triggering muon "A") is matched to the nearest hit of its event and plane within
``CORRECT_SIGMAS`` plane resolutions, as :mod:`na64reco.background.pileup_truth` does; B's crossings within
``SEPARATE_SIGMAS`` of A's are left out (their cluster may be A's).  Per plane type (MM, GEM) the
plot shows B's reconstructed hit time minus A's event time against B's true time, the fraction
of B's crossings with a hit and with a hit inside the search's hit-time window (``_usable``),
and A's own hits for comparison.  A's event time is the median of A's reconstructed APV hit
times in the event: the clock phase (uniform over one sample spacing per event, common to the
event's hits) cancels in the differences.

    python benchmarks/pileup_hit_times.py --run 1 --events 20000 --seed 5 --workdir /tmp/puht \\
        --plot docs/images/pileup_hit_times.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from na64reco.background.lone_muon_truth import CORRECT_SIGMAS
from na64reco.background.pileup_truth import SEPARATE_SIGMAS

#: a B hit reconstructed this close to A's event time "looks in time" (B itself is >= 15 ns away)
IN_TIME_LOOKING_NS = 10.0


def simulate_sample(run: int, events: int, seed: int, workdir: Path) -> tuple[Path, Path]:
    """The forced (0, 1) raw file and its crossings (kept in ``workdir``: re-used if present)."""
    from na64reco.background.fake_kicks import bend_region, near_times
    from na64reco.conditions import load_conditions
    from na64reco.geometry import load_setup
    from na64reco.sim.forced_noise import ForcedNoise
    from na64reco.sim.generate import simulate
    from na64reco.sim.occupancy import ForcedPileup

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"pu01_run{run}_{seed}_{events}.root"
    cross = path.with_suffix(".crossings.npz")
    if not (path.exists() and cross.exists()):
        setup = load_setup("na64mu", run=run)
        cond = load_conditions(setup, run)
        simulate(setup, events, seed, run, str(path), process="beam", trigger="calibration",
                 forced_noise=ForcedNoise.of(bend_region(setup, cond), 0),
                 forced_pileup=ForcedPileup.of(near_times(setup, cond), 1), true_crossings=cross)
    return path, cross


def _match(hit_pos, hit_sig, plane_off, n_planes, row, plane, u):
    """Index of the nearest hit of (event row, plane) to ``u`` within CORRECT_SIGMAS, -1 none."""
    out = np.full(row.size, -1, np.int64)
    key = row * n_planes + plane
    lo, hi = plane_off[key], plane_off[key + 1]
    for i in np.flatnonzero(hi > lo):
        d = np.abs(hit_pos[lo[i]:hi[i]] - u[i]) / hit_sig[lo[i]:hi[i]]
        j = int(np.argmin(d))
        if d[j] < CORRECT_SIGMAS:
            out[i] = lo[i] + j
    return out


def hit_times(path: Path, cross: Path, run: int) -> dict:
    """Per APV crossing of A and of B: plane type, true time, matched hit's time, usable flag."""
    from na64reco.conditions import load_conditions
    from na64reco.geometry import load_setup
    from na64reco.io import open_raw
    from na64reco.reco.tracking.stage import reconstruct_tracks

    setup = load_setup("na64mu", run=run)
    cond = load_conditions(setup, run)
    events = open_raw(str(path)).events()
    c = dict(np.load(cross))
    r = reconstruct_tracks(events, setup, cond, source=str(path), return_internals=True)
    hits, usable = r["_hits"], np.asarray(r["_usable"], bool)
    npl = len(setup.planes)
    ptype = np.array([p.type for p in setup.planes])
    apv = ptype != "straw"
    pos, sig = np.asarray(hits["pos"], float), np.asarray(hits["sigma"], float)
    htime = np.asarray(hits["time"], float)
    plane_off = np.asarray(hits["plane_offsets"], np.int64)
    ev = np.asarray(events["event"], np.int64)
    order = np.argsort(ev)

    def rows(numbers):
        numbers = np.asarray(numbers, np.int64)
        rr = order[np.clip(np.searchsorted(ev, numbers, sorter=order), 0, ev.size - 1)]
        return rr, ev[rr] == numbers

    # A: the event's own particle
    a_row, a_ok = rows(c["event"])
    a_pl = np.asarray(c["plane"], np.int64)
    a_ok &= apv[a_pl]
    u_a = np.full((ev.size, npl), np.nan)
    u_a[a_row[a_ok], a_pl[a_ok]] = np.asarray(c["u"], float)[a_ok]
    out = {}
    a_h = _match(pos, sig, plane_off, npl, a_row[a_ok], a_pl[a_ok], np.asarray(c["u"], float)[a_ok])
    out["A"] = {"type": ptype[a_pl[a_ok]], "t_true": np.asarray(c["t"], float)[a_ok], "hit": a_h}
    # B: the pile-up muon (its time: the muon's; crossings also carry the time of flight)
    b_row, b_ok = rows(c["pileup_event"])
    b_pl = np.asarray(c["pileup_plane"], np.int64)
    b_u = np.asarray(c["pileup_u"], float)
    b_ok &= apv[b_pl]
    sep = np.abs(b_u - u_a[b_row, b_pl]) / np.asarray([p.resolution for p in setup.planes])[b_pl]
    b_ok &= ~(sep < SEPARATE_SIGMAS)  # NaN (A has no crossing there) counts as separate
    mu_t = np.asarray(c["pileup_muon_time"], float)[np.asarray(c["pileup_muon"], np.int64)]
    b_h = _match(pos, sig, plane_off, npl, b_row[b_ok], b_pl[b_ok], b_u[b_ok])
    out["B"] = {"type": ptype[b_pl[b_ok]], "t_true": mu_t[b_ok], "hit": b_h}
    out["A"]["row"], out["B"]["row"] = a_row[a_ok], b_row[b_ok]
    out["A"]["plane"], out["B"]["plane"] = a_pl[a_ok], b_pl[b_ok]
    out["A"]["u"], out["B"]["u"] = np.asarray(c["u"], float)[a_ok], b_u[b_ok]
    for d in out.values():
        h = d["hit"]
        d["t_reco"] = np.where(h >= 0, htime[np.maximum(h, 0)], np.nan)
        d["usable"] = (h >= 0) & usable[np.maximum(h, 0)]
        d["strip"] = np.where(h >= 0, np.asarray(hits["strip"], float)[np.maximum(h, 0)], np.nan)
    # A's event time: the median of its APV hits' reconstructed times (the clock phase, uniform in
    # one sample spacing per event, is common to the event's hits and cancels in the differences)
    ta = out["A"]["t_reco"]
    ok = np.isfinite(ta)
    t_event = np.full(ev.size, np.nan)
    ra = out["A"]["row"][ok]
    o = np.lexsort((ta[ok], ra))
    r_sorted, t_sorted = ra[o], ta[ok][o]
    first = np.searchsorted(r_sorted, np.unique(r_sorted))
    last = np.searchsorted(r_sorted, np.unique(r_sorted), side="right")
    t_event[np.unique(r_sorted)] = 0.5 * (t_sorted[(first + last - 1) // 2] + t_sorted[(first + last) // 2])
    for d in out.values():
        d["dt"] = d["t_reco"] - t_event[d["row"]]
    return out


def near_min_ns(run: int) -> float:
    """The smallest |time| (ns) of B in the forced near times N of the run's period
    (:func:`na64reco.background.lone_muon_truth.view_geometry`, from
    :func:`na64reco.background.fake_kicks.near_times`)."""
    from na64reco.background.lone_muon_truth import view_geometry
    from na64reco.conditions import load_conditions
    from na64reco.geometry import load_setup

    setup = load_setup("na64mu", run=run)
    return view_geometry(setup, load_conditions(setup, run))["near_dt_min_ns"]


def summarize(out: dict, edges: np.ndarray, near_min: float) -> list[str]:
    """Per plane type and bin of B's true time: crossings, with a hit, time NaN, usable, and the
    median of B's hit time minus A's event time (all hits with a time; the usable ones)."""
    lines = []
    for typ in ("MM", "GEM"):
        a, b = out["A"], out["B"]
        ma = a["type"] == typ
        da = a["dt"][ma & np.isfinite(a["dt"])]
        lines.append(f"{typ}: A crossings {int(ma.sum())}, with a hit {np.mean(a['hit'][ma] >= 0):.3f}, usable "
                     f"{np.mean(a['usable'][ma]):.3f}; A hit - A event time 16/50/84 %: "
                     + " ".join(f"{x:+.2f}" for x in np.percentile(da, [16, 50, 84])) + " ns")
        lines.append("  B t_true bin     crossings  hit   time-NaN usable | median(B - A event) all  usable  "
                     "| all: 16-84 % of (B - A) - t_true")
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            m = (b["type"] == typ) & (b["t_true"] >= lo) & (b["t_true"] < hi)
            if not m.any():
                continue
            hit = m & (b["hit"] >= 0)
            fin = hit & np.isfinite(b["dt"])
            tu = b["dt"][m & b["usable"] & np.isfinite(b["dt"])]
            res = b["dt"][fin] - b["t_true"][fin]
            q = np.percentile(res, [16, 84]) if res.size else (np.nan, np.nan)
            lines.append(f"  [{lo:+4.0f},{hi:+4.0f}) {int(m.sum()):7d}  {hit.sum() / m.sum():.3f}  "
                         f"{(hit.sum() - fin.sum()) / max(hit.sum(), 1):.3f}    "
                         f"{np.sum(m & b['usable']) / m.sum():.3f} | "
                         f"{np.median(b['dt'][fin]) if fin.any() else np.nan:+6.1f}  "
                         f"{np.median(tu) if tu.size else np.nan:+6.1f}  | {q[0]:+6.1f} {q[1]:+6.1f}")
        n_in = (b["type"] == typ) & (np.abs(b["t_true"]) >= near_min) & (b["t_true"] < edges[-1])
        use = n_in & b["usable"]
        near = use & (np.abs(b["dt"]) < IN_TIME_LOOKING_NS)
        lines.append(f"  B crossings with {near_min:g} <= |t_true| < {edges[-1]:.0f} ns: {int(n_in.sum())}, "
                     f"usable {int(use.sum())}, "
                     f"of which within {IN_TIME_LOOKING_NS:.0f} ns of A's event time {int(near.sum())} "
                     f"({near.sum() / max(use.sum(), 1):.3f} of the usable, {near.sum() / max(n_in.sum(), 1):.4f} per "
                     f"crossing); median |B - A| of the usable {np.median(np.abs(b['dt'][use])):.1f} ns")
    return lines


def plot(out: dict, path: str, edges: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    mid = 0.5 * (edges[:-1] + edges[1:])
    for k, typ in enumerate(("MM", "GEM")):
        a, b = out["A"], out["B"]
        ma = (a["type"] == typ) & np.isfinite(a["dt"])
        mb = (b["type"] == typ) & np.isfinite(b["dt"]) & (b["t_true"] >= edges[0]) & (b["t_true"] < edges[-1])
        top = ax[0, k]
        top.plot(b["t_true"][mb & ~b["usable"]], b["dt"][mb & ~b["usable"]], ",", color="0.6", alpha=0.5,
                 label="B hit outside the hit-time window")
        top.plot(b["t_true"][mb & b["usable"]], b["dt"][mb & b["usable"]], ".", ms=1.5, color="C3",
                 label="B hit usable (inside the window)")
        top.plot(a["t_true"][ma], a["dt"][ma], ".", ms=2, color="C0", alpha=0.3, label="A's own hits")
        top.plot(edges, edges, "k--", lw=0.8, label="reco = true")
        top.set_ylabel("hit time - A's event time (ns, reco)")
        top.set_title(f"{typ} planes, 2022 forced (0, 1)")
        top.set_ylim(-80, 60)
        top.legend(fontsize=7, markerscale=4, loc="upper left")
        bot = ax[1, k]
        fh, fu = [], []
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            m = (b["type"] == typ) & (b["t_true"] >= lo) & (b["t_true"] < hi)
            n = max(int(m.sum()), 1)
            fh.append(np.sum(m & (b["hit"] >= 0) & np.isfinite(b["t_reco"])) / n)
            fu.append(np.sum(m & b["usable"]) / n)
        bot.step(mid, fh, where="mid", label="B crossing with a hit (time not NaN)")
        bot.step(mid, fu, where="mid", label="B hit usable (inside the hit-time window)")
        ua = np.mean(a["usable"][a["type"] == typ])
        bot.axhline(ua, color="C0", ls=":", label=f"A's crossings usable ({ua:.2f})")
        bot.set_xlabel("B's true time (ns from the trigger)")
        bot.set_ylabel("fraction of B's separate crossings")
        bot.set_ylim(0, 1.05)
        bot.legend(fontsize=7)
    fig.suptitle("Pile-up muon B: reconstructed APV hit times vs its true time (A: the triggering muon)")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=int, default=1, help="1: 2022 period, 10001: 2023")
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/pileup_hit_times"))
    ap.add_argument("--plot", default="docs/images/pileup_hit_times.png")
    a = ap.parse_args(argv)
    path, cross = simulate_sample(a.run, a.events, a.seed, a.workdir)
    out = hit_times(path, cross, a.run)
    edges = np.arange(-50.0, 85.0, 5.0)  # the near times N lie in [-45, 79] ns
    print("\n".join(summarize(out, edges, near_min_ns(a.run))))
    plot(out, a.plot, edges)
    print(f"wrote {a.plot}")


if __name__ == "__main__":
    main()
