"""``na64reco demo``: the whole chain on built-in defaults, in a minute.

Simulates a small NA64mu run (beam with backgrounds, with truth), a dark-boson signal
sample and a data-like run (no truth, hence blinded), runs the ``na64mu_invisible``
processor over the three, prints the cut-flows and writes histograms, control plots, an
event display of a signal event and a summary figure to the output directory.
"""

from __future__ import annotations

from pathlib import Path

NAME = "demo"
HELP = "simulate a small NA64mu run, reconstruct, run the blinded analysis, print the cut-flow, write plots"


def add_arguments(p):
    p.add_argument("--output", "-o", default="demo-output", help="output directory (default: demo-output)")
    p.add_argument("--events", type=int, default=20_000, help="muons on target per sample (default 20000)")
    p.add_argument("--mass", type=float, default=0.1, help="Z' mass of the signal sample in GeV (default 0.1)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--executor", default="iterative", choices=("iterative", "futures", "dask"))
    p.add_argument("--workers", type=int, default=1)


def run(args) -> int:
    from na64reco.errors import ConfigError
    from na64reco.runner import RunOptions, cutflow_summary, format_summary, run_files, save_outputs
    from na64reco.sim.generate import simulate
    from na64reco.units import GeV

    if args.events <= 0:
        raise ConfigError(f"--events must be positive, got {args.events}")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    samples = {
        "mc_mixture": dict(process="mixture", truth=True, seed=args.seed),
        f"signal_m{args.mass:g}GeV": dict(process="signal", mass=args.mass * GeV, truth=True, seed=args.seed + 1),
        "data": dict(process="mixture", truth=False, seed=args.seed + 2),
    }
    fileset = {}
    for i, (name, kw) in enumerate(samples.items()):
        path = out / f"{name}.root"
        print(f"[demo] simulating {name}: {args.events} muons on target -> {path}")
        simulate("na64mu", args.events, run=1001 + i, output=path, progress=True, **kw)
        fileset[name] = [str(path)]
    print(f"[demo] running na64mu_invisible ({args.executor}) over {len(fileset)} datasets")
    opts = RunOptions("na64mu_invisible", executor=args.executor, workers=args.workers, status=True)
    result = run_files(fileset, opts)
    save_outputs(result, out / "analysis")
    print(format_summary(cutflow_summary(result)))
    signal = fileset[f"signal_m{args.mass:g}GeV"][0]
    display = _display_signal_event(signal, out / "event_display.png")
    summary = _summary_figure(result, out / "summary.png", args.mass)
    print(f"[demo] outputs in {out}/: analysis/ (cut-flow, histograms, control plots), {display.name}, "
          f"{summary.name}")
    return 0


def _display_signal_event(path, output: Path) -> Path:
    """Event display of the first signal event with true and reconstructed p_out in the box."""
    import numpy as np

    from na64reco.conditions import load_conditions
    from na64reco.display import draw_event
    from na64reco.geometry import load_setup
    from na64reco.io.raw import open_raw
    from na64reco.reco.event import reconstruct

    with open_raw(path) as raw:
        n = min(raw.n_events, 500)
        truth = raw.truth(0, n)
        setup = load_setup(raw.setup, run=raw.run)
        conditions = load_conditions(setup, raw.run)
        p_out = np.asarray(reconstruct(raw.events(0, n), setup, conditions).p_out, dtype=float)
        box = _box_edge_gev()
        candidates = np.nonzero((truth["p_out"] < box) & (p_out < box))[0]
        i = int(candidates[0]) if candidates.size else 0
        draw_event(raw.events(i, i + 1), 0, setup, conditions,
                   title=f"{Path(path).name}: simulated Z' signal, true p_out = {truth['p_out'][i]:.1f} GeV",
                   output=output)
    return output


def _summary_figure(result: dict, output: Path, mass: float) -> Path:
    """p_out and E_ECAL after all other cuts for MC, signal and (blinded) data; the cut-flow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep

    mplhep.style.use("CMS")
    fig, axes = plt.subplots(1, 3, figsize=(21, 6.5))
    sig_name = f"signal_m{mass:g}GeV"
    for ax, var in zip(axes[:2], ("p_out", "ecal_energy"), strict=True):
        for name, label in (("mc_mixture", "MC: beam + backgrounds"), (sig_name, f"Z' signal, m = {mass:g} GeV"),
                            ("data", "data-like run (blinded)")):
            h = result[name]["hists"].get(var)
            if h is None:
                continue
            h = h[{"stage": "selected"}]
            total = h.sum().value if hasattr(h.sum(), "value") else h.sum()
            if total <= 0:
                continue
            mplhep.histplot(h / total, ax=ax, label=label, histtype="step", lw=2)
        ax.set_yscale("log")
        ax.set_ylabel("fraction of events after all cuts")
        ax.legend(fontsize=12)
    box = _box_edge_gev()
    axes[0].axvspan(0, box, color="0.9", zorder=0)
    axes[0].text(box / 2, 0.8, "signal box\n(blind for data)", ha="center", transform=axes[0].get_xaxis_transform(),
                 fontsize=12)
    flow = result[sig_name]["cutflow"].to_dict()["cutflow"]
    names = [r["cut"] for r in flow]
    axes[2].barh(range(len(flow))[::-1], [r["cumulative"] for r in flow], color="tab:orange")
    axes[2].set_yticks(range(len(flow))[::-1], names, fontsize=11)
    axes[2].set_xlabel("signal efficiency (cumulative)")
    axes[2].set_xlim(0, 1)
    fig.suptitle("na64reco demo: simulated NA64mu run, blinded invisible-mode analysis", fontsize=16)
    fig.tight_layout()
    fig.savefig(output, dpi=80)
    plt.close(fig)
    return output


def _box_edge_gev() -> float:
    """Upper edge of the NA64mu signal box (p_out, GeV) from the selection file."""
    from na64reco.selection import load_selection

    return float(load_selection("na64mu_invisible").signal_box.max)
