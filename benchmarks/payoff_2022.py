"""The payoff of issue 9: unblind a simulated 2022-like NA64mu data set and draw the exclusion plot.

    python benchmarks/payoff_2022.py --mot 300000 --workdir payoff_2022 \\
        [--efficiency-json docs/efficiency.json] [--background benchmarks/payoff_2022_background.yaml] \\
        [--inject-signal 0.1:300] [--plot docs/images/exclusion_2022.png] [--summary payoff.json]

Steps, each with the real ``na64reco`` commands (subprocesses of the entry point beside
this Python, with this checkout first on PYTHONPATH):

1. **Data.**  ``na64reco simulate --no-truth``: ``--mot`` muons of the 2022-like period
   (run 1001) with the beam mixture of ``calib/setups/na64mu.yaml`` (the 2022 admixture
   rates: halo, pile-up, hadrons, K/pi decays, dimuons), written without truth: data.
   ``--inject-signal MASS_GEV:N`` adds a second data file of N Z' signal interactions
   (a closure test: the box then holds background + N x efficiency events).
2. **Blinded analysis.**  ``na64reco run --processor na64mu_invisible``: the signal box
   reads ``blinded``; the MOT of the data set is the sum of the spills' beam counts.
3. **Background estimate, blind.**  Per-MOT rates from ``--background`` (simulation
   campaigns made before unblinding, each with its command) times the data set's MOT.
4. **Freeze** (``na64reco freeze``) and **unblind** (``na64reco unblind``), with a
   registry of unblindings inside ``--workdir`` (the user's registry is not touched).
   The observed count is read from the unblind command's output and checked against its
   ``unblinded_counts.json``.
5. **Compare** the observed count with the background estimate: Poisson p-values of
   n >= n_obs and n <= n_obs (the estimate's error folded in by a Gaussian average);
   consistent if both are above 0.0027 (3 sigma, two-sided).
6. **Limit.**  90 % CL (CLs) g90(m_Z') from our efficiency (``--efficiency-json``, the
   2022 period of ``benchmarks/efficiency_breakdown.py --json``, interpolated in log m)
   with the IWW yield over the whole x range: (a) this data set at its own exposure;
   (b) projected to 1.98e10 MOT with our background scaled to it and n_obs = its median;
   (c) 1.98e10 MOT with our efficiency and the published background (0.07 +- 0.03, 0
   observed), which isolates the efficiency.  Drawn with the (g-2) +-2 sigma band and the
   published 2022 limit *as reconstructed from the seeds' statements* (not digitised: the
   limit crosses the lower band edge at ~40 MeV, i.e. g90 ~ 4.6e-4 below 40 MeV,
   extended in mass with the shape of the IWW x > 0.5 yield).

Exit 0 when every step ran and the observed count equals the one ``unblind`` reports.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from hepunits import GeV, MeV

from na64reco.conditions import default_tag
from na64reco.efficiency import published_implied_efficiency
from na64reco.physics.gminus2 import g_band
from na64reco.physics.yields import expected_signal
from na64reco.stats.limits import cls_upper_limit, coupling_limit

REPO = Path(__file__).resolve().parents[1]
RUN_2022 = 1001
MOT_2022 = 1.98e10
PUBLISHED_B, PUBLISHED_DB = 0.07, 0.03            # PRL 132, 211803 (2024); seed 001
PUBLISHED_CROSSING = 40 * MeV                    # (g-2) excluded above ~40 MeV (seed 003, NA64.md)
G_REF = 1e-4
N_STEPS = 8
CONSISTENCY_P = 0.0027                           # 3 sigma, two-sided
PROCESSOR = "na64mu_invisible"


class PayoffError(RuntimeError):
    """A step of the payoff failed (the message names the step and what was found)."""


# ---- commands ---------------------------------------------------------------------------
def entry_point() -> str:
    found = shutil.which("na64reco", path=str(Path(sys.executable).parent)) or shutil.which("na64reco")
    if found is None:
        raise PayoffError("the na64reco entry point is not installed beside this Python (pip install -e .)")
    return found


def na64reco(*args, log: list, cwd: Path) -> str:
    """Run ``na64reco ARGS``; return stdout; raise PayoffError with the output tail on failure."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    argv = [entry_point(), *map(str, args)]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    log.append({"command": "na64reco " + " ".join(map(str, args)), "exit": proc.returncode,
                "seconds": round(time.perf_counter() - t0, 1)})
    print(f"[payoff] $ na64reco {' '.join(map(str, args))}  ({log[-1]['seconds']} s, exit {proc.returncode})",
          flush=True)
    if proc.returncode != 0:
        raise PayoffError(f"`na64reco {args[0]}` exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


# ---- background and consistency ---------------------------------------------------------
def load_background(path: Path) -> list[dict]:
    doc = yaml.safe_load(path.read_text())
    comps = doc.get("components") if isinstance(doc, dict) else None
    if not comps:
        raise PayoffError(f"{path}: no 'components' list")
    for c in comps:
        if not isinstance(c.get("rate_per_mot"), (int, float)) or c["rate_per_mot"] < 0:
            raise PayoffError(f"{path}: component {c.get('source')!r} needs rate_per_mot >= 0, "
                              f"got {c.get('rate_per_mot')!r}")
    return comps


def background_at(comps: list[dict], mot: float) -> tuple[float, float, list[dict]]:
    """Total b and its error for ``mot`` (limits count as u +- u, errors in quadrature)."""
    rows, total, var = [], 0.0, 0.0
    for c in comps:
        n = c["rate_per_mot"] * mot
        err = n if c.get("upper_limit") else c.get("error_per_mot", 0.0) * mot
        rows.append({"source": c["source"], "n": n, "error": err, "upper_limit": bool(c.get("upper_limit"))})
        total += n
        var += err**2
    return total, math.sqrt(var), rows


def poisson_p_values(n_obs: int, b: float, db: float, n_draws: int = 20001) -> tuple[float, float]:
    """P(n >= n_obs) and P(n <= n_obs) for n ~ Poisson(b'), b' ~ Gauss(b, db) truncated at 0."""
    from scipy.stats import norm, poisson

    if db > 0:
        q = (np.arange(n_draws) + 0.5) / n_draws
        lo = norm.cdf(-b / db)
        means = np.clip(b + db * norm.ppf(lo + q * (1 - lo)), 0.0, None)
    else:
        means = np.array([b])
    p_high = float(np.mean(poisson.sf(n_obs - 1, means))) if n_obs > 0 else 1.0
    p_low = float(np.mean(poisson.cdf(n_obs, means)))
    return p_high, p_low


# ---- efficiency and limits --------------------------------------------------------------
def load_efficiency(path: Path, period: str = "2022") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    doc = json.loads(path.read_text())
    try:
        points = doc["periods"][period]["points"]
    except KeyError:
        raise PayoffError(f"{path}: no period {period!r} "
                          "(make it with benchmarks/efficiency_breakdown.py --json)") from None
    masses = np.array([p["mass_mev"] for p in points]) * MeV
    eff = np.array([p["efficiency"] for p in points])
    err = np.array([p.get("error", 0.0) for p in points])
    if not (np.all(eff > 0) and np.all(eff <= 1)):
        raise PayoffError(f"{path}: efficiencies of period {period} must be in (0, 1], got {eff.tolist()}")
    return masses, eff, err


def interpolate_efficiency(masses, eff, grid):
    """log-log interpolation (constant outside the simulated masses)."""
    return np.exp(np.interp(np.log(grid), np.log(masses), np.log(eff)))


def g90_curve(grid, eff, mot: float, n_up: float) -> np.ndarray:
    """g90 for the whole-x-range IWW yield times the efficiency per signal interaction."""
    return np.array([coupling_limit(m, n_up, n_ref=expected_signal(mot, m, G_REF, e, n_steps=N_STEPS),
                                    coupling_ref=G_REF) for m, e in zip(grid, eff, strict=True)])


def published_curve(grid) -> np.ndarray:
    """The published 2022 limit as reconstructed from the seeds (approximate, not digitised).

    Anchored where the seeds put it -- g90 on the lower edge of the (g-2) +-2 sigma band at
    40 MeV -- and extended in mass with the shape of the IWW x > 0.5 yield (a
    mass-independent efficiency): g90(m) = g90(40 MeV) sqrt(N(40 MeV) / N(m)).
    """
    n_up = cls_upper_limit(0, PUBLISHED_B, PUBLISHED_DB, 0.9)
    g_cross = float(g_band(PUBLISHED_CROSSING, 2.0)[0])
    eff = published_implied_efficiency(mot=MOT_2022, n_up=n_up, crossing_mass=PUBLISHED_CROSSING,
                                       g_at_crossing=g_cross)
    return np.array([coupling_limit(m, n_up, n_ref=expected_signal(MOT_2022, m, G_REF, eff, x_min=0.5,
                                                                   n_steps=N_STEPS), coupling_ref=G_REF)
                     for m in grid])


def plot(path: Path, grid, curves: dict, band, masses, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep

    mplhep.style.use("CMS")
    fig, ax = plt.subplots(figsize=(10, 8))
    m = grid / GeV
    ax.fill_between(m, band[0], band[2], color="tab:green", alpha=0.3,
                    label=r"$(g-2)_\mu$ $\pm2\sigma$, $\Delta a_\mu=(2.51\pm0.59)\times10^{-9}$")
    ax.plot(m, band[1], color="tab:green", lw=1)
    ax.plot(m, curves["published"], color="tab:orange", lw=3, ls="--",
            label="NA64$\\mu$ 2022 published (approximate: reconstructed from\n"
                  "the seeds' statements, crossing the band at ~40 MeV; not digitised)")
    ax.plot(m, curves["published_bkg"], color="k", lw=2.5,
            label=f"ours: our efficiency, published b = {PUBLISHED_B} $\\pm$ {PUBLISHED_DB}, 0 obs., 1.98e10 MOT")
    b_full = summary["background_1p98e10"]
    ax.plot(m, curves["our_bkg"], color="tab:red", lw=2, ls="-.",
            label=f"ours: our efficiency and background ({b_full['n']:.3g} $\\pm$ {b_full['error']:.2g}) "
                  "at 1.98e10 MOT,\nexpected (n$_{obs}$ = median)")
    d = summary["data"]
    ax.plot(m, curves["data"], color="tab:blue", lw=2, ls=":",
            label=f"this data set: {d['mot']:.3g} MOT, {summary['observed']} observed, "
                  f"b = {summary['background']['n']:.2g}")
    ax.plot(masses / GeV, np.interp(np.log(masses), np.log(grid), curves["published_bkg"]), "ko", ms=5)
    ax.plot([PUBLISHED_CROSSING / GeV], [float(g_band(PUBLISHED_CROSSING, 2.0)[0])], marker="*", ms=16,
            color="tab:orange", ls="none", label="seeds: (g-2) excluded above ~40 MeV (anchor of the dashed curve)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(m[0], m[-1])
    ax.set_ylim(1e-4, 3.0)
    ax.set_xlabel(r"$m_{Z'}$ [GeV]")
    ax.set_ylabel(r"$g_{Z'}$, 90% CL upper limit")
    ax.set_title(r"NA64$\mu$ 2022-like, simulated data unblinded ($L_\mu - L_\tau$ Z' $\to$ invisible)",
                 fontsize=14)
    ax.legend(loc="upper left", fontsize=10.5, frameon=False)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


# ---- main ------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mot", type=int, default=300_000, help="muons on target of the simulated data set")
    ap.add_argument("--seed", type=int, default=2022)
    ap.add_argument("--workdir", type=Path, default=Path("payoff_2022"),
                    help="data, outputs, ledger and registry of unblindings (must not exist unless --overwrite)")
    ap.add_argument("--overwrite", action="store_true", help="remove an existing --workdir first")
    ap.add_argument("--efficiency-json", type=Path, default=REPO / "docs" / "efficiency.json",
                    help="benchmarks/efficiency_breakdown.py --json output (period 2022 is used)")
    ap.add_argument("--background", type=Path, default=REPO / "benchmarks" / "payoff_2022_background.yaml",
                    help="blind background estimate, rates per MOT")
    ap.add_argument("--inject-signal", metavar="MASS_GEV:N",
                    help="add N Z' signal interactions of this mass as a second data file (closure)")
    ap.add_argument("--plot", type=Path, default=REPO / "docs" / "images" / "exclusion_2022.png")
    ap.add_argument("--summary", type=Path, help="write the results as JSON (default: WORKDIR/payoff.json)")
    args = ap.parse_args(argv)
    if args.mot < 1:
        raise PayoffError(f"--mot must be >= 1, got {args.mot}")

    work = args.workdir.resolve()
    if work.exists():
        if not args.overwrite:
            raise PayoffError(f"{work} exists: choose another --workdir or pass --overwrite")
        shutil.rmtree(work)
    (work / "data").mkdir(parents=True)
    log: list = []
    comps = load_background(args.background)
    masses, eff, eff_err = load_efficiency(args.efficiency_json)
    tag = default_tag("na64mu")

    # 1. data
    files = [work / "data" / f"run{RUN_2022}_mixture.root"]
    na64reco("simulate", "--setup", "na64mu", "--events", args.mot, "--run", RUN_2022, "--seed", args.seed,
             "--no-truth", "--quiet", "--output", files[0], log=log, cwd=work)
    injected = None
    if args.inject_signal:
        try:
            mass_gev, n_sig = args.inject_signal.split(":")
            mass_gev, n_sig = float(mass_gev), int(n_sig)
        except ValueError:
            raise PayoffError(f"--inject-signal must be MASS_GEV:N, got {args.inject_signal!r}") from None
        files.append(work / "data" / f"run{RUN_2022}_signal.root")
        na64reco("simulate", "--setup", "na64mu", "--events", n_sig, "--run", RUN_2022, "--seed", args.seed + 1,
                 "--process", "signal", "--mass", mass_gev, "--no-truth", "--quiet", "--output", files[1],
                 log=log, cwd=work)
        e_inj = float(interpolate_efficiency(masses, eff, np.array([mass_gev * GeV]))[0])
        rel = float(np.interp(np.log(mass_gev * GeV), np.log(masses), eff_err / eff))
        injected = {"mass_gev": mass_gev, "interactions": n_sig, "efficiency": e_inj, "expected": n_sig * e_inj,
                    "expected_error": n_sig * e_inj * rel}

    # 2. blinded analysis
    na64reco("run", "--processor", PROCESSOR, "--calib-tag", tag, "--output", work / "blinded", "--no-progress",
             *files, log=log, cwd=work)
    flow = json.loads((work / "blinded" / "cutflow.json").read_text())
    prov = [d["provenance"] for d in flow.values()]
    mot = sum(int(p["n_beam"]) for p in prov)
    box_rows = [r for d in flow.values() for r in d["cutflow"] if r["cut"] == "signal_box"]
    blinded = all(d.get("blinded") for d in flow.values()) and all(
        not isinstance(r["events"], int) for r in box_rows)
    if not blinded:
        raise PayoffError("the blinded run of the data set shows the signal box: it must read 'blinded'")

    # 3. background, blind
    b, db, b_rows = background_at(comps, mot)
    b_full, db_full, b_full_rows = background_at(comps, MOT_2022)

    # 4. freeze and unblind
    ledger = work / "frozen" / "na64mu_2022_payoff.json"
    registry = work / "registry"
    na64reco("freeze", "--processor", PROCESSOR, "--calib-tag", tag, "--ledger", ledger, "--registry", registry,
             "--note", f"payoff_2022: simulated 2022-like data set, {mot} MOT", *files, log=log, cwd=work)
    out = na64reco("unblind", "--ledger", ledger, "--i-understand-this-opens-the-box", "--output",
                   work / "unblinded", "--registry", registry, log=log, cwd=work)
    match = re.search(r"signal box: (\d+) observed events", out)
    if match is None:
        raise PayoffError(f"`na64reco unblind` printed no 'signal box: N observed events' line:\n{out[-1500:]}")
    observed = int(match.group(1))
    counts = json.loads((work / "unblinded" / "unblinded_counts.json").read_text())
    n_json = int(counts["result"]["signal_box"]["events"])
    if n_json != observed or int(counts["result"]["n_beam"]) != mot:
        raise PayoffError(f"unblinded_counts.json says {n_json} events and {counts['result']['n_beam']} MOT, "
                          f"the unblind command printed {observed} and the blinded run counted {mot} MOT")

    # 5. consistency
    b_expected = b + (injected["expected"] if injected else 0.0)
    db_expected = math.hypot(db, injected["expected_error"] if injected else 0.0)
    p_high, p_low = poisson_p_values(observed, b_expected, db_expected)
    consistent = min(p_high, p_low) > CONSISTENCY_P

    # 6. limits
    grid = np.geomspace(1 * MeV, 1 * GeV, 50)
    eff_grid = interpolate_efficiency(masses, eff, grid)
    n_up_data = cls_upper_limit(observed, b, db, 0.9)
    n_med = int(round(b_full))
    n_up_full = cls_upper_limit(n_med, b_full, db_full, 0.9)
    n_up_pub = cls_upper_limit(0, PUBLISHED_B, PUBLISHED_DB, 0.9)
    curves = {"data": g90_curve(grid, eff_grid, mot, n_up_data),
              "our_bkg": g90_curve(grid, eff_grid, MOT_2022, n_up_full),
              "published_bkg": g90_curve(grid, eff_grid, MOT_2022, n_up_pub),
              "published": published_curve(grid)}
    band = g_band(grid, 2.0)
    table_masses = masses[(masses >= grid[0]) & (masses <= grid[-1])]
    at = {k: np.interp(np.log(table_masses), np.log(grid), v) for k, v in curves.items()}

    summary = {
        "data": {"mot": mot, "files": [str(f) for f in files], "seed": args.seed, "run": RUN_2022,
                 "calib_tag": tag, "injected_signal": injected},
        "blinded_box": "blinded",
        "background_file": str(args.background), "background": {"n": b, "error": db, "rows": b_rows},
        "background_1p98e10": {"n": b_full, "error": db_full, "rows": b_full_rows},
        "observed": observed, "unblinded_counts": str(work / "unblinded" / "unblinded_counts.json"),
        "expected": b_expected, "expected_error": db_expected,
        "p_value_n_ge_obs": p_high, "p_value_n_le_obs": p_low, "consistent": consistent,
        "n_up": {"data": n_up_data, "1p98e10_our_background": n_up_full, "1p98e10_published_background": n_up_pub,
                 "median_observed_1p98e10": n_med},
        "efficiency_json": str(args.efficiency_json),
        "limits": {"mass_mev": (table_masses / MeV).tolist(),
                   "efficiency": np.interp(np.log(table_masses), np.log(masses), eff).tolist(),
                   **{k: v.tolist() for k, v in at.items()},
                   "g2_low": g_band(table_masses, 2.0)[0].tolist()},
        "plot": str(args.plot), "commands": log,
    }
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    plot(args.plot, grid, curves, band, masses, summary)
    summary_path = args.summary or work / "payoff.json"
    summary_path.write_text(json.dumps(summary, indent=1) + "\n")

    print(f"\n# data set: {mot} MOT (run {RUN_2022}, seed {args.seed}, 2022-like mixture)"
          + (f" + {injected['interactions']} injected Z' interactions at {injected['mass_gev']:g} GeV "
             f"(expected {injected['expected']:.2f} in the box)" if injected else ""))
    print(f"# blinded run: signal box blinded; background estimate ({args.background.name}): "
          f"b = {b:.3g} +- {db:.2g} events")
    for r in b_rows:
        print(f"#   {r['source']}: {'< ' if r['upper_limit'] else ''}{r['n']:.3g}"
              + ("" if r["upper_limit"] else f" +- {r['error']:.2g}"))
    print(f"# unblinded: {observed} observed (unblind command and unblinded_counts.json agree); expected "
          f"{b_expected:.3g} +- {db_expected:.2g}: P(n >= obs) = {p_high:.3g}, P(n <= obs) = {p_low:.3g} -> "
          f"{'consistent' if consistent else 'NOT consistent'} within Poisson (3 sigma)")
    print(f"# at 1.98e10 MOT our background would be {b_full:.3g} +- {db_full:.2g} events "
          f"(published {PUBLISHED_B} +- {PUBLISHED_DB}); n_up: data {n_up_data:.2f}, 1.98e10 ours "
          f"{n_up_full:.3g}, 1.98e10 published b {n_up_pub:.2f}")
    print(f"\n{'m_MeV':>7} {'eff':>7} {'g90 pub.(approx)':>16} {'g90 ours,pub.b':>15} {'g90 ours,our b':>15} "
          f"{'g90 data set':>13} {'g-2 low':>9}")
    for i, mm in enumerate(table_masses):
        print(f"{mm / MeV:7.4g} {summary['limits']['efficiency'][i]:7.4f} {at['published'][i]:16.3e} "
              f"{at['published_bkg'][i]:15.3e} {at['our_bkg'][i]:15.3e} {at['data'][i]:13.3e} "
              f"{summary['limits']['g2_low'][i]:9.3e}")
    print(f"\n# plot written to {args.plot}; summary {summary_path}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PayoffError as exc:
        print(f"payoff_2022: {exc}", file=sys.stderr)
        sys.exit(1)
