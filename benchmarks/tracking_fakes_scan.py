"""Tracking efficiency and fake-momentum rate of 160 GeV beam muons per run period, on truth,
with the fake rate at nominal noise from noise-enhanced samples (biased sampling).

    python benchmarks/tracking_fakes_scan.py [--events 20000] [--periods 2022,2023]
        [--noise 1,10,20,30 (k or k:EVENTS)] [--campaign docs/data/misreco_2022.json,docs/data/misreco_2023.json]
        [--workdir DIR] [--json OUT.json]

For each period (2022: run 1, 2023: run 10001 of ``calib/setups/na64mu.yaml``) and each noise
multiplier k (tracker noise clusters per plane and event x k, at random times in the readout
window), ``--events`` beam muons are simulated with the calibration trigger (every beam muon
is written) and reconstructed.  Among the muons with true p_out > 100 GeV:

* tracking efficiency: p_in and p_out found, beside the closed form (at most
  max_missing_planes of each bend view's planes without hit, independent plane
  efficiencies, times the beam-spot acceptance of the narrowest plane); and with the
  selection's tracking cuts (``na64reco.background.fake_kicks.TRACKING_CUTS``: one track in each
  station, p_in window, no second in-time muon in MS2, chi2_out, track match);
* fakes: reconstructed p_out < 80 GeV, at tracking level and after those cuts.

Fakes after the cuts are too rare to count at the nominal noise (k = 1) in any affordable
sample: a fake kick needs every upstream (or downstream) bend-plane hit of MS2 lost and
replaced by in-time noise hits that line up, i.e. a power of the noise density.  The scan
fits f(k) = f1 k^n (Poisson likelihood over the k > 1 points, f = fakes after cuts per muon
tracked with the cuts) and extrapolates to k = 1 with the fit's covariance (the error on n
dominates).  Per MOT: f1 x (events after all cuts but the box per MOT, from the campaign
JSON of the period, ``--campaign``): the fraction of well-tracked beam muons that fake a
kick times the well-tracked beam muons the analysis keeps.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
from pathlib import Path

import numpy as np
from scipy import optimize

from na64reco.background.fake_kicks import TRACKING_CUTS
from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw
from na64reco.reco.tracking import reconstruct_tracks
from na64reco.reco.tracking.expectation import closed_form_efficiency
from na64reco.selection.cuts import Columns, cut_mask
from na64reco.selection.schema import load_selection
from na64reco.sim.generate import simulate

PERIOD_RUNS = {"2022": 1, "2023": 10001}


def with_noise(setup, k: float):
    return dataclasses.replace(setup, planes=tuple(dataclasses.replace(p, noise_hits=p.noise_hits * k)
                                                   for p in setup.planes))


def measure(period: str, k: float, n: int, seed: int, work: Path) -> dict:
    run = PERIOD_RUNS[period]
    setup = load_setup("na64mu", run=run)
    path = work / f"beam_{period}_noise{k:g}_{n}_{seed}.root"
    if not path.exists():
        simulate(with_noise(setup, k), n, seed, run, path, process="beam", trigger="calibration")
    raw = open_raw(path)
    out = reconstruct_tracks(raw.events(), setup, load_conditions(setup, run))
    hard = np.asarray(raw.truth()["p_out"]) > 100
    found = np.isfinite(out["p_in"]) & np.isfinite(out["p_out"])
    sel = {c.name: c for c in load_selection("na64mu_invisible").cuts}
    cols = Columns(None, {k: np.asarray(v) for k, v in out.items()})
    cuts = found.copy()
    for name in TRACKING_CUTS:
        cuts &= cut_mask(cols, sel[name])
    fake = hard & (out["p_out"] < 80)
    return {"period": period, "noise": k, "n_hard": int(hard.sum()), "eff": float(found[hard].mean()),
            "eff_expected": closed_form_efficiency(setup), "eff_cuts": float(cuts[hard].mean()),
            "n_tracked_cuts": int((cuts & hard).sum()), "fake": int(fake.sum()), "fake_cuts": int((fake & cuts).sum())}


def fit_power(rows: list[dict]) -> dict | None:
    """f(k) = f1 k^n through the points with k > 1 (Poisson); f1 and its error at k = 1."""
    pts = [(r["noise"], r["fake_cuts"], r["n_tracked_cuts"]) for r in rows if r["noise"] > 1 and r["n_tracked_cuts"]]
    if len(pts) < 2 or sum(c for _, c, _ in pts) < 3:
        return None
    k, c, m = (np.array(v, float) for v in zip(*pts, strict=True))

    def nll(p):
        mu = m * np.exp(p[0] + p[1] * np.log(k))
        return float(np.sum(mu - c * np.log(np.maximum(mu, 1e-300))))

    res = optimize.minimize(nll, x0=np.array([math.log(max(c.sum(), 1) / m.sum()) - 2 * math.log(k.mean()), 2.0]),
                            method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000})
    h = np.zeros((2, 2))
    eps = np.array([1e-3, 1e-3])
    for i in range(2):
        for j in range(2):
            ei, ej = np.eye(2)[i] * eps[i], np.eye(2)[j] * eps[j]
            h[i, j] = (nll(res.x + ei + ej) - nll(res.x + ei - ej) - nll(res.x - ei + ej) + nll(res.x - ei - ej)) / (
                4 * eps[i] * eps[j])
    cov = np.linalg.inv(h)
    ln_f1, n = res.x
    err_ln = math.sqrt(max(cov[0, 0], 0.0))
    return {"exponent": float(n), "exponent_error": float(math.sqrt(max(cov[1, 1], 0.0))),
            "f1": float(math.exp(ln_f1)), "f1_ln_error": err_ln,
            "points": [{"noise": float(a), "fakes": int(b), "tracked": int(d)} for a, b, d in pts]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--periods", default="2022,2023")
    ap.add_argument("--noise", default="1,10,20,30",
                    help="comma-separated noise multipliers k, each optionally k:EVENTS (default --events)")
    ap.add_argument("--campaign", default="", help="comma-separated campaign JSON files (misreco_<period>.json)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    after_cuts = {}
    for f in filter(None, args.campaign.split(",")):
        d = json.loads(Path(f).read_text())
        after_cuts[str(d["period"])] = d["after_cuts_but_box"] / d["mot"]
    rows, fits = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for period in args.periods.split(","):
            prow = []
            for item in args.noise.split(","):
                k, _, n = item.partition(":")
                prow.append(measure(period, float(k), int(n) if n else args.events, args.seed, work))
            rows += prow
            fits[period] = fit_power(prow)
    print(f"{'period':>6} {'noise':>5} {'N(p>100)':>8} {'eff':>7} {'closed':>7} {'eff+cuts':>8} "
          f"{'fake(p<80)':>10} {'fake+cuts':>9}")
    for r in rows:
        print(f"{r['period']:>6} {r['noise']:>5g} {r['n_hard']:>8} {r['eff']:>7.4f} {r['eff_expected']:>7.4f} "
              f"{r['eff_cuts']:>8.4f} {r['fake']:>10} {r['fake_cuts']:>9}")
    summary = {}
    for period, fit in fits.items():
        if fit is None:
            print(f"{period}: too few fakes after cuts for the noise scaling")
            continue
        lo, hi = (fit["f1"] * math.exp(s * fit["f1_ln_error"]) for s in (-1, 1))
        line = (f"{period}: fakes after cuts per tracked muon = f1 k^n, n = {fit['exponent']:.2f} +- "
                f"{fit['exponent_error']:.2f}; at nominal noise f1 = {fit['f1']:.2e} (1 sigma {lo:.1e} - {hi:.1e})")
        summary[period] = dict(fit)
        if period in after_cuts:
            pm = fit["f1"] * after_cuts[period]
            line += (f"; per MOT {pm:.1e} (1 sigma {lo * after_cuts[period]:.1e} - {hi * after_cuts[period]:.1e}),"
                     f" x 1.98e10 MOT: {pm * 1.98e10:.2g}")
            summary[period]["per_mot"] = pm
            summary[period]["per_mot_1sigma"] = [lo * after_cuts[period], hi * after_cuts[period]]
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "noise_scaling": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
