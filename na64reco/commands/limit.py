"""``na64reco limit``: 90 % CL limits on the dark-boson coupling from a counting result.

Example (NA64mu 2022 inputs, PRL 132, 211803 (2024))::

    na64reco limit --setup na64mu --mot 1.98e10 --efficiency 0.1 \\
        --background 0.07 --background-uncertainty 0.03 --observed 0 \\
        --masses 0.001 0.01 0.1 1.0 --plot limit.png

Masses are given and printed in GeV.  For ``na64mu`` the coupling is g of the
L_mu - L_tau Z' (compared with the muon g-2 band); for ``na64e`` it is the kinetic mixing
eps of an invisibly decaying A' (``--eot``; rough primary-electron yield model, see
:mod:`na64reco.physics.yields`).
"""

from __future__ import annotations

import json
import math

import hepunits as u
import numpy as np

from na64reco.errors import ConfigError, NA64Error

NAME = "limit"
HELP = "90% CL upper limits on signal events and on the coupling g (Z') or eps (A') vs mass"

#: the setups whose search the command knows (beam, model and signal box: na64reco.selection.signal_model)
SETUPS = ("na64mu", "na64e")


def _signal_model(setup: str):
    """:func:`na64reco.selection.signal_model.signal_model` (imported when used: building the command
    line's options imports no analysis module)."""
    from na64reco.selection.signal_model import signal_model

    return signal_model(setup)


def add_arguments(parser) -> None:
    parser.add_argument("--setup", choices=sorted(SETUPS), default="na64mu",
                        help="beam mode: na64mu (Z', g) or na64e (A', eps)")
    parser.add_argument("--mot", type=float, help="muons on target (required for na64mu, refused for na64e; "
                        "no default)")
    parser.add_argument("--eot", type=float, help="electrons on target (required for na64e, refused for na64mu; "
                        "no default)")
    parser.add_argument("--efficiency", type=float, required=True,
                        help="signal efficiency in (0, 1], excluding the x > x_min acceptance")
    parser.add_argument("--background", type=float, default=0.0, help="expected background events")
    parser.add_argument("--background-uncertainty", type=float, default=0.0,
                        help="absolute 1-sigma uncertainty of the background (Gaussian, truncated at 0; CLs and CLb "
                             "averaged over it)")
    parser.add_argument("--observed", type=int, default=0, help="observed events in the signal box")
    parser.add_argument("--masses", type=float, nargs="+", required=True, help="X masses in GeV")
    parser.add_argument("--x-min", type=float, default=None,
                        help="minimum E_X/E0 (signal box); default from the setup (0.5)")
    parser.add_argument("--method", choices=("iww", "ww"), default="iww",
                        help="cross-section approximation (default iww)")
    parser.add_argument("--cl", type=float, default=0.9, help="confidence level (default 0.9)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="write the exclusion plot, whole (replaced if it exists; default: no plot)")


def _validate(args) -> float:
    setup = _signal_model(args.setup)
    n_on_target = args.mot if setup.model == "zprime" else args.eot
    flag = "--mot" if setup.model == "zprime" else "--eot"
    other, other_value, other_setup = ("--eot", args.eot, "na64e") if flag == "--mot" else ("--mot", args.mot, "na64mu")
    if other_value is not None and n_on_target is not None:
        raise ConfigError(f"{other} {other_value:g} is an option of setup {other_setup}, not of {args.setup}; "
                          f"leave it out ({flag} gives the leptons on target)")
    if other_value is not None:  # it would be ignored
        counted = "muons" if flag == "--mot" else "electrons"
        raise ConfigError(f"{other} {other_value:g} is an option of setup {other_setup}, not of {args.setup} (which "
                          f"counts the {counted} on target with {flag}); give {flag} instead")
    if n_on_target is None:
        raise ConfigError(f"setup {args.setup} needs {flag} (number of leptons on target)")
    if not (n_on_target > 0 and math.isfinite(n_on_target)):
        raise ConfigError(f"{flag} must be a positive number, got {n_on_target}")
    if not (0.0 < args.efficiency <= 1.0):
        raise ConfigError(f"--efficiency must be in (0, 1], got {args.efficiency}")
    bad = [m for m in args.masses if not (m > 0 and math.isfinite(m))]
    if bad:
        raise ConfigError(f"--masses must be > 0 GeV, got {bad}")
    if args.x_min is not None and not 0 <= args.x_min < 1:  # before the masses' reach, which depends on it
        raise ConfigError(f"--x-min must be in [0, 1), got {args.x_min}")
    x_min = setup.x_min if args.x_min is None else args.x_min
    too_heavy = [m for m in args.masses if m * u.GeV >= setup.e0 * (1 - x_min)]
    if too_heavy:
        box = f"--x-min {x_min:g}" if args.x_min is not None else f"the x > {x_min:g} signal box of {args.setup}"
        raise ConfigError(f"--masses {too_heavy} GeV: the yield's Weizsaecker-Williams calculation (for m << E0) "
                          f"is used only for m < E0 (1 - x_min) = {setup.e0 * (1 - x_min) / u.GeV:g} GeV, with the "
                          f"{setup.e0 / u.GeV:g} GeV beam and {box} (above, it is not even monotonic in m)")
    from na64reco.stats.limits import MAX_RELATIVE_BACKGROUND_UNCERTAINTY as max_rel

    for flag, value in (("--background", args.background), ("--background-uncertainty", args.background_uncertainty)):
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{flag} must be a finite number >= 0, got {value}")
    if args.background_uncertainty > 0 and args.background == 0:
        raise ConfigError(f"--background-uncertainty {args.background_uncertainty:g} needs --background > 0 "
                          "(the uncertainty is on the background normalisation)")
    if args.background_uncertainty > max_rel * args.background:
        raise ConfigError(f"--background-uncertainty {args.background_uncertainty:g} is more than {max_rel:g} times "
                          f"--background {args.background:g}: the one-bin model's Gaussian-constrained background "
                          "normalisation does not describe that; give a smaller uncertainty")
    if args.observed < 0:
        raise ConfigError(f"--observed must be >= 0, got {args.observed}")
    if not 0 < args.cl < 1:
        raise ConfigError(f"--cl must be in (0, 1), got {args.cl}")
    return n_on_target


def compute(args) -> dict:
    """Limits for each mass of ``args`` (a namespace as built by :func:`add_arguments`)."""
    from na64reco.physics.gminus2 import g_band
    from na64reco.physics.yields import expected_signal
    from na64reco.stats.limits import cls_upper_limit, coupling_limit, poisson_upper_limit

    n_on_target = _validate(args)
    setup = _signal_model(args.setup)
    x_min = setup.x_min if args.x_min is None else args.x_min
    try:
        n_up = cls_upper_limit(args.observed, args.background, args.background_uncertainty, args.cl)
        n_up_poisson = poisson_upper_limit(args.observed, args.background, args.cl)
    except (ValueError, RuntimeError) as exc:  # (the inputs were checked above: a configuration without a limit)
        raise NA64Error(f"no upper limit for --observed {args.observed} --background {args.background:g} "
                        f"--background-uncertainty {args.background_uncertainty:g} --cl {args.cl!r}: {exc}") from exc
    rows = []
    for mass_gev in args.masses:
        mass = mass_gev * u.GeV
        ref = 1e-4
        # the yield is linear in the leptons on target: the per-lepton yield keeps the
        # coupling limit finite for any exposure (g90 ~ 1/sqrt(N), N up to the float range)
        n_ref_per_lepton = expected_signal(1.0, mass, ref, args.efficiency, e0=setup.e0,
                                           lepton_mass=setup.lepton_mass, model=setup.model,
                                           x_min=x_min, method=args.method)
        g90 = coupling_limit(mass, n_up, n_ref=n_ref_per_lepton, coupling_ref=ref) / math.sqrt(n_on_target)
        if not math.isfinite(g90):
            raise NA64Error(f"no finite limit at {mass_gev:g} GeV: {n_ref_per_lepton:g} signal events per lepton "
                            f"on target at {setup.coupling} = {ref:g} with --efficiency {args.efficiency:g} (too "
                            "small for floating point)")
        row = {"mass_gev": mass_gev, "n_expected_at_1e-4": n_ref_per_lepton * n_on_target,
               f"{setup.coupling}90": g90}
        if setup.model == "zprime":
            lo, mid, hi = (float(v) for v in g_band(mass, 2.0))
            row.update({"g2_band_low": lo, "g2_band_central": mid, "g2_band_high": hi,
                        "g2_excluded": bool(row["g90"] < lo)})
        rows.append(row)
    return {"setup": args.setup, "n_on_target": n_on_target, "efficiency": args.efficiency,
            "background": args.background, "background_uncertainty": args.background_uncertainty,
            "observed": args.observed, "cl": args.cl, "x_min": x_min, "method": args.method,
            "n_up": n_up, "n_up_poisson": n_up_poisson, "limits": rows}


def crossing_mass(masses, g90, g_low) -> float | None:
    """Lowest mass (same units as ``masses``) above which g90 < g_low (log interpolation):
    ``masses[0]`` if the band is excluded there already, None if it is excluded nowhere."""
    d = np.log(np.asarray(g90)) - np.log(np.asarray(g_low))
    if d[0] < 0:
        return float(masses[0])  # excluded from the start
    for i in range(len(d) - 1):
        if d[i] >= 0 > d[i + 1]:
            lm = np.log(masses[i]) + d[i] / (d[i] - d[i + 1]) * (np.log(masses[i + 1]) - np.log(masses[i]))
            return float(np.exp(lm))
    return None


def excluded_range(masses, g90, g_low) -> tuple[float, float | None] | None:
    """(first, last) mass of the first part of the g-2 band excluded, from :func:`crossing_mass` on
    (log interpolation).

    ``last`` is where g90 rises above ``g_low`` again (Z' -> mu mu opens, the 1/m^2 fall of
    the yield) and None if the band stays excluded to the end of ``masses``; None if the band
    is excluded nowhere.
    """
    first = crossing_mass(masses, g90, g_low)
    if first is None:
        return None
    d = np.log(np.asarray(g90)) - np.log(np.asarray(g_low))
    masses = np.asarray(masses, float)
    for i in range(len(d) - 1):
        if masses[i + 1] > first and d[i] < 0 <= d[i + 1]:
            lm = np.log(masses[i]) + d[i] / (d[i] - d[i + 1]) * (np.log(masses[i + 1]) - np.log(masses[i]))
            return first, float(np.exp(lm))
    return first, None


def excluded_text(excluded, lowest: float) -> str:
    """'above X MeV', 'from X to Y MeV', ... for the excluded part of the g-2 band
    (:func:`excluded_range` in MeV; ``lowest`` the first mass of its grid): the words of the
    plot, the command's output and notebook 06."""
    if excluded is None:
        return "nowhere in the range shown"
    first, last = excluded
    start = f"from {first:.1f}" if first > lowest else f"from the lowest mass shown ({lowest:.1f} MeV)"
    if last is None:
        return f"above {first:.1f} MeV" if first > lowest else "over the whole range shown"
    return f"{start} to {last:.1f} MeV"


def _plot(result: dict, args, path: str) -> tuple[float, float | None] | None:
    from na64reco.physics.yields import expected_signal
    from na64reco.plotting import na64_style
    from na64reco.stats.limits import coupling_limit

    setup = _signal_model(args.setup)
    masses = np.geomspace(1.0, 0.5 * setup.e0 * (1 - result["x_min"]) if setup.model == "zprime"
                          else 1000.0, 40)  # MeV
    masses = masses[masses < 2000.0]
    g90 = np.array([coupling_limit(m, result["n_up"], n_ref=expected_signal(
        result["n_on_target"], m, 1e-4, args.efficiency, e0=setup.e0,
        lepton_mass=setup.lepton_mass, model=setup.model, x_min=result["x_min"],
        n_steps=8, method=args.method), coupling_ref=1e-4) for m in masses])
    with na64_style():
        return _draw_limit(result, args, path, setup, masses, g90)


def _draw_limit(result: dict, args, path: str, setup, masses, g90) -> tuple[float, float | None] | None:
    """The exclusion plot (in the NA64 style set by the caller); returns the excluded part of the g-2 band.

    That is :func:`excluded_range` on the plot's mass grid (MeV), or None.
    """
    from matplotlib.figure import Figure

    from na64reco.physics.gminus2 import g_band
    from na64reco.plotting import DPI, beam_label, exp_label, freeze_layout

    fig = Figure(figsize=(11, 9), layout="constrained")
    ax = fig.add_subplot()
    excluded = None
    if setup.model == "zprime":
        lo, mid, hi = g_band(masses, 2.0)
        ax.fill_between(masses / u.GeV, lo, hi, color="tab:green", alpha=0.35,
                        label=r"$(g-2)_\mu$ $\pm 2\sigma$ ($\Delta a_\mu=(2.51\pm0.59)\times10^{-9}$)")
        ax.plot(masses / u.GeV, mid, color="tab:green", lw=1)
        excluded = excluded_range(masses, g90, lo)
    label = "this calculation, 90% CL" + (f" (eff={args.efficiency:g}, {args.method.upper()})")
    ax.plot(masses / u.GeV, g90, color="k", lw=2, label=label)
    ax.fill_between(masses / u.GeV, g90, 1.0, color="gray", alpha=0.2, lw=0, label="excluded at 90% CL")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"$m_{Z'}$ [GeV]" if setup.model == "zprime" else r"$m_{A'}$ [GeV]")
    ax.set_ylabel(r"$g_{Z'}$" if setup.model == "zprime" else "ε (kinetic mixing)")
    ax.set_ylim(min(g90.min(), 1e-4) / 2, 2e-2)
    text = (f"{args.setup}: {beam_label(args.setup, result['n_on_target'])}, "
            f"b = {args.background:g} events, $n_{{obs}}$ = {args.observed}")
    result["g2_excluded_text"] = excluded_text(excluded, float(masses[0])) if setup.model == "zprime" else None
    if excluded is not None:
        text += f"\ng-2 band excluded {result['g2_excluded_text']} (this calc.)"
    if setup.model == "zprime":
        text += "\nNA64mu 2022: g-2 explanation excluded above ~40 MeV"
    ax.text(0.03, 0.97, text, transform=ax.transAxes, va="top", fontsize="xx-small",
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    ax.legend(loc="lower right", fontsize="xx-small", frameon=True, facecolor="white", framealpha=1.0,
              edgecolor="0.7")
    freeze_layout(fig)
    exp_label(ax, data=True, rlabel=beam_label(args.setup, result["n_on_target"]))
    fig.savefig(path, dpi=DPI)
    return excluded


def run(args) -> int:
    if args.plot:
        from na64reco.display import check_image_output

        check_image_output(args.plot, "--plot")  # before the limits are computed
    result = compute(args)
    if args.plot:
        from na64reco.atomic import output_file

        with output_file(args.plot) as staged:
            excluded = _plot(result, args, staged)
            result["g2_crossing_mev"] = excluded[0] if excluded else None
            result["g2_excluded_to_mev"] = excluded[1] if excluded else None
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    c = _signal_model(args.setup).coupling
    print(f"# {args.setup}: N_on_target={result['n_on_target']:.4g} eff={args.efficiency:g} "
          f"b={args.background:g}+-{args.background_uncertainty:g} n_obs={args.observed} "
          f"x>{result['x_min']:g} ({args.method})")
    print(f"# {100 * args.cl:.10g}% CL upper limit on signal events: {result['n_up']:.3f} "
          f"(Poisson CLs cross-check {result['n_up_poisson']:.3f})")
    if c == "g":
        print(f"{'mass_GeV':>10} {'n_up':>7} {'g90':>10} {'g2_low':>10} {'g2_mid':>10} "
              f"{'g2_high':>10}  g-2 excluded")
        for r in result["limits"]:
            print(f"{r['mass_gev']:10.4g} {result['n_up']:7.3f} {r['g90']:10.3e} "
                  f"{r['g2_band_low']:10.3e} {r['g2_band_central']:10.3e} {r['g2_band_high']:10.3e}"
                  f"  {'yes' if r['g2_excluded'] else 'no'}")
    else:
        print(f"{'mass_GeV':>10} {'n_up':>7} {'eps90':>10}")
        for r in result["limits"]:
            print(f"{r['mass_gev']:10.4g} {result['n_up']:7.3f} {r['eps90']:10.3e}")
    if args.plot:
        where = result.get("g2_excluded_text")
        print(f"# plot written to {args.plot}" + (f"; g-2 band excluded {where} (plot grid)" if where else ""))
    return 0
