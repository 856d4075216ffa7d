"""NA64mu 90 % CL exclusion g90(m_Z') with the published 2022 inputs, two efficiency models.

    python benchmarks/limits_vs_mass.py [--events 5000] [--masses 1 3 10 30 100 300 1000]
                                        [--output docs/images/exclusion_na64mu.png]

Inputs (PRL 132, 211803 (2024), NA64.md): 1.98e10 MOT, background 0.07 +- 0.03, 0 observed.

(a) *this simulation*: for each mass a Z' signal sample (``--events`` MOT, every muon a
    signal interaction) runs through the ``na64mu_invisible`` processor;
    eff(m) = selected events in the box / simulated signal interactions
    (:mod:`na64reco.efficiency`: trigger, acceptance, reconstruction, cuts and the
    p_out < 80 GeV box, hence the x > 0.5 acceptance, all included).  The yield is
    expected_signal(MOT, m, g, efficiency=eff(m)) over the whole x range (IWW, like the
    simulation); eff is interpolated in log m between the simulated masses.
(b) *inferred from the publication*: a mass-independent efficiency eff_b applied to the
    x > 0.5 yield (the ``na64reco limit --efficiency`` convention), solved so that g90
    crosses the lower edge of the (g-2) +-2 sigma band at the published 40 MeV; for the
    IWW and the WW cross section.  eff_b x A(x > 0.5) is the total efficiency it implies.

Prints the efficiency table, the g90 table for (a) and (b), the crossing masses, and
draws both curves with the (g-2)_mu band and the published statement.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from hepunits import GeV, MeV

from na64reco.commands.limit import crossing_mass
from na64reco.efficiency import signal_efficiency, x_acceptance
from na64reco.physics.gminus2 import g_band
from na64reco.physics.yields import expected_signal
from na64reco.selection.signal_model import signal_model
from na64reco.stats.limits import cls_upper_limit, coupling_limit

MOT = 1.98e10
BACKGROUND, BACKGROUND_ERR, OBSERVED = 0.07, 0.03, 0
PUBLISHED_CROSSING = 40 * MeV  # "the g-2 explanation is excluded for m_Z' >~ 40 MeV"
X_MIN = signal_model("na64mu").x_min  # the box of selections/na64mu_invisible.yaml
G_REF = 1e-4
N_STEPS = 8  # depth slices of the yield integral (the muon loses < 1 % of its energy)


def n_ref(mass: float, efficiency: float, *, x_min: float | None, method: str) -> float:
    """Expected signal for 1.98e10 MOT at g = G_REF."""
    return expected_signal(MOT, mass, G_REF, efficiency, x_min=x_min, method=method, n_steps=N_STEPS)


def g90(mass: float, n_up: float, efficiency: float, *, x_min: float | None, method: str) -> float:
    return coupling_limit(mass, n_up, n_ref=n_ref(mass, efficiency, x_min=x_min, method=method),
                          coupling_ref=G_REF)


def solve_efficiency(n_up: float, method: str) -> float:
    """eff_b with g90(40 MeV) = lower edge of the g-2 band at 40 MeV (N ~ eff g^2: closed form)."""
    g_low = float(g_band(PUBLISHED_CROSSING, 2.0)[0])
    n_at_glow = expected_signal(MOT, PUBLISHED_CROSSING, g_low, 1.0, x_min=X_MIN, method=method,
                                n_steps=N_STEPS)
    return n_up / n_at_glow


def excluded_intervals(grid, curve, g_low) -> list[tuple[float, float]]:
    """Mass intervals where g90 < lower band edge (ends log-interpolated; grid ends if open)."""
    d = np.log(curve) - np.log(g_low)
    lm = np.log(grid)
    out, start = [], (grid[0] if d[0] < 0 else None)
    for i in range(len(d) - 1):
        if (d[i] < 0) != (d[i + 1] < 0):
            m = float(np.exp(lm[i] + d[i] / (d[i] - d[i + 1]) * (lm[i + 1] - lm[i])))
            if d[i + 1] < 0:
                start = m
            else:
                out.append((start, m))
                start = None
    if start is not None:
        out.append((start, grid[-1]))
    return out


def interpolate_efficiency(masses, eff, grid):
    """log-log interpolation of eff(m) (constant outside the simulated range)."""
    return np.exp(np.interp(np.log(grid), np.log(masses), np.log(np.clip(eff, 1e-9, None))))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=5000, help="MOT per signal mass (default 5000)")
    ap.add_argument("--masses", type=float, nargs="+", default=[1, 3, 10, 30, 100, 300, 1000],
                    help="Z' masses in MeV")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--output", default=str(Path(__file__).resolve().parents[1] / "docs/images/exclusion_na64mu.png"))
    args = ap.parse_args(argv)

    masses = np.array(sorted(args.masses)) * MeV
    t0 = time.perf_counter()
    table = signal_efficiency("na64mu", masses, args.events, seed=args.seed)
    t_eff = time.perf_counter() - t0
    print(table.format())
    print(f"# {len(masses)} samples x {args.events} MOT simulated and processed in {t_eff:.0f} s\n")

    n_up = cls_upper_limit(OBSERVED, BACKGROUND, BACKGROUND_ERR, 0.9)
    print(f"# NA64mu 2022 inputs: MOT = {MOT:.3g}, b = {BACKGROUND} +- {BACKGROUND_ERR}, "
          f"n_obs = {OBSERVED}: 90% CL CLs upper limit n_up = {n_up:.3f} events")
    eff_b = {m: solve_efficiency(n_up, m) for m in ("iww", "ww")}
    for method, e in eff_b.items():
        print(f"# (b) efficiency inferred from the published 40 MeV crossing ({method.upper()}, "
              f"applied to the x > {X_MIN:g} yield): eff_b = {e:.4f}")

    # ---- table at the simulated masses -----------------------------------------------------
    lo, mid, hi = g_band(masses, 2.0)
    rows = []
    for i, p in enumerate(table.points):
        ga = g90(p.mass, n_up, p.efficiency, x_min=None, method="iww")
        gb = {m: g90(p.mass, n_up, e, x_min=X_MIN, method=m) for m, e in eff_b.items()}
        rows.append((p.mass, p.efficiency, p.error, p.acceptance, ga, gb["iww"], gb["ww"], lo[i], hi[i]))
    print(f"\n{'m_MeV':>7} {'eff_a':>7} {'+-':>6} {'A(x>.5)':>8} {'effb*A':>7} {'g90(a)':>10} "
          f"{'g90(b,IWW)':>11} {'g90(b,WW)':>10} {'g2_low':>10} {'g2_high':>10}  excluded a/b")
    for m, e, de, a, ga, gbi, gbw, gl, gh in rows:
        print(f"{m / MeV:7.4g} {e:7.4f} {de:6.4f} {a:8.4f} {eff_b['iww'] * a:7.4f} {ga:10.3e} {gbi:11.3e} "
              f"{gbw:10.3e} {gl:10.3e} {gh:10.3e}  {'yes' if ga < gl else 'no '}/{'yes' if gbi < gl else 'no'}")

    # ---- curves and crossings --------------------------------------------------------------
    grid = np.geomspace(masses[0], masses[-1], 60)
    eff_grid = interpolate_efficiency(masses, table.efficiency, grid)
    curve_a = np.array([g90(m, n_up, e, x_min=None, method="iww") for m, e in zip(grid, eff_grid, strict=True)])
    curve_b = {meth: np.array([g90(m, n_up, e, x_min=X_MIN, method=meth) for m in grid])
               for meth, e in eff_b.items()}
    band = g_band(grid, 2.0)
    cross_a = crossing_mass(grid, curve_a, band[0])
    cross_b = {meth: crossing_mass(grid, c, band[0]) for meth, c in curve_b.items()}

    def fmt(c):
        return "none in range" if c is None else f"{c / MeV:.1f} MeV"

    def fmt_intervals(iv):
        return ", ".join(f"{a / MeV:.1f}-{b / MeV:.1f} MeV" for a, b in iv) or "none"

    print(f"\n# lowest mass above which g90 < lower (g-2) 2 sigma edge: (a) this simulation: {fmt(cross_a)}; "
          f"(b) IWW eff_b={eff_b['iww']:.3f}: {fmt(cross_b['iww'])}; "
          f"(b) WW eff_b={eff_b['ww']:.3f}: {fmt(cross_b['ww'])}; published: ~{PUBLISHED_CROSSING / MeV:g} MeV")
    print(f"# excluded (g-2 band lower edge) within {grid[0] / MeV:g}-{grid[-1] / MeV:g} MeV: "
          f"(a) {fmt_intervals(excluded_intervals(grid, curve_a, band[0]))}; "
          f"(b, IWW) {fmt_intervals(excluded_intervals(grid, curve_b['iww'], band[0]))}; "
          f"(b, WW) {fmt_intervals(excluded_intervals(grid, curve_b['ww'], band[0]))}")
    plot(args.output, grid, band, curve_a, curve_b, eff_b, table, eff_grid, n_up, cross_a,
         fmt_intervals(excluded_intervals(grid, curve_a, band[0])))
    print(f"# plot written to {args.output} ({time.perf_counter() - t0:.0f} s in total)")
    return 0


def plot(path, grid, band, curve_a, curve_b, eff_b, table, eff_grid, n_up, cross_a, excluded_text) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep

    mplhep.style.use("CMS")
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(10, 10), sharex=True, height_ratios=(3, 1.2))
    m = grid / GeV
    ax.fill_between(m, band[0], band[2], color="tab:green", alpha=0.35,
                    label=r"$(g-2)_\mu$ $\pm 2\sigma$ ($\Delta a_\mu=(2.51\pm0.59)\times10^{-9}$)")
    ax.plot(m, band[1], color="tab:green", lw=1)
    ax.plot(m, curve_a, color="k", lw=2.5, label="(a) this simulation + cuts, eff(m) (IWW)")
    ax.plot(table.masses / GeV, [curve_a[np.argmin(abs(grid - x))] for x in table.masses], "ko", ms=5)
    ax.plot(m, curve_b["iww"], color="tab:red", lw=2, ls="--",
            label=rf"(b) eff$_b$ = {eff_b['iww']:.3f} $\times$ A(x>0.5), IWW")
    ax.plot(m, curve_b["ww"], color="tab:blue", lw=2, ls=":",
            label=rf"(b) eff$_b$ = {eff_b['ww']:.3f} $\times$ A(x>0.5), WW")
    g_pub = float(g_band(PUBLISHED_CROSSING, 2.0)[0])
    ax.plot([PUBLISHED_CROSSING / GeV], [g_pub], marker="*", ms=18, color="tab:orange", ls="none",
            label=r"NA64$\mu$ 2022 (published): $g-2$ excluded above ~40 MeV")
    ax.axvline(PUBLISHED_CROSSING / GeV, color="tab:orange", lw=1, ls="-.")
    if cross_a is not None:
        ax.axvline(cross_a / GeV, color="k", lw=1, ls="-.")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylabel(r"$g_{Z'}$ (90% CL upper limit)")
    ax.set_ylim(5e-5, 1e-1)
    ax.text(0.03, 0.97, rf"NA64$\mu$: {MOT:.3g} MOT, $b={BACKGROUND}\pm{BACKGROUND_ERR}$, "
            rf"$n_{{obs}}={OBSERVED}$, $n_{{up}}={n_up:.2f}$" + "\n"
            + "g-2 band (lower edge) excluded: (a) " + excluded_text,
            transform=ax.transAxes, va="top", fontsize=13)
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, 0.87), fontsize=11, frameon=False)
    e, de = table.efficiency, table.error
    ax2.errorbar(table.masses / GeV, e, de, fmt="ko", label="(a) simulated: all cuts + box")
    ax2.plot(m, eff_grid, "k-", lw=1)
    for meth, style, colour in (("iww", "--", "tab:red"), ("ww", ":", "tab:blue")):
        acc = np.array([x_acceptance("na64mu", x, method=meth) for x in grid])
        ax2.plot(m, eff_b[meth] * acc, style, color=colour,
                 label=rf"(b) eff$_b$ $\times$ A(x>0.5), {meth.upper()}")
    ax2.set_yscale("log")
    ax2.set_ylabel("total signal eff.")
    ax2.set_xlabel(r"$m_{Z'}$ [GeV]")
    ax2.legend(fontsize=10, loc="lower right", ncol=3, frameon=False)
    ax2.set_ylim(1e-3, 1.5)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
