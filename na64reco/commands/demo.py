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
    p.add_argument("--output", "-o", default="demo-output",
                   help="output directory (default: demo-output); it appears when the demo has finished "
                        "and must not exist unless --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output directory as a whole (nothing of it is kept)")
    p.add_argument("--events", type=int, default=20_000, help="muons on target per sample (default 20000)")
    p.add_argument("--mass", type=float, default=0.1, help="Z' mass of the signal sample in GeV (default 0.1)")
    p.add_argument("--seed", type=int, default=1,
                   help="random seed of the first sample (the others use seed+1, seed+2)")
    p.add_argument("--executor", default="iterative", choices=("iterative", "futures", "dask"),
                   help="coffea executor of the analysis")
    p.add_argument("--workers", type=int, default=1, help="processes (futures) or dask workers")


def run(args) -> int:
    from na64reco.atomic import check_new_output, output_dir
    from na64reco.errors import ConfigError
    from na64reco.runner import RunOptions, cutflow_summary, format_summary, run_files, write_outputs
    from na64reco.sim.generate import simulate
    from na64reco.units import GeV

    if args.events <= 0:
        raise ConfigError(f"--events must be positive, got {args.events}")
    out = Path(args.output)
    check_new_output(out, overwrite=args.overwrite)
    samples = {
        "mc_mixture": dict(process="mixture", truth=True, seed=args.seed),
        f"signal_m{args.mass:g}GeV": dict(process="signal", mass=args.mass * GeV, truth=True, seed=args.seed + 1),
        "data": dict(process="mixture", truth=False, seed=args.seed + 2),
    }
    # everything is written into a temporary sibling of OUT, renamed to OUT at the end
    with output_dir(out, overwrite=args.overwrite) as staged:
        fileset = {}
        for i, (name, kw) in enumerate(samples.items()):
            path = staged / f"{name}.root"
            print(f"[demo] simulating {name}: {args.events} muons on target -> {out / path.name}")
            simulate("na64mu", args.events, run=1001 + i, output=path, progress=True, **kw)
            fileset[name] = [str(path)]
        print(f"[demo] running na64mu_invisible ({args.executor}) over {len(fileset)} datasets")
        opts = RunOptions("na64mu_invisible", executor=args.executor, workers=args.workers, status=True)
        result = run_files(fileset, opts)
        _relocate(result, staged, out)  # the provenance names the files where they will be
        (staged / "analysis").mkdir()
        write_outputs(result, staged / "analysis")
        print(format_summary(cutflow_summary(result)))
        signal = fileset[f"signal_m{args.mass:g}GeV"][0]
        display = _display_signal_event(signal, staged / "event_display.png")
        summary = _summary_figure(result, staged / "summary.png", args.mass)
    print(f"[demo] outputs in {out}/: analysis/ (cut-flow, histograms, control plots), {display.name}, "
          f"{summary.name}")
    return 0


def _relocate(result: dict, staged: Path, final: Path) -> None:
    """Rename the input files recorded in each dataset's provenance from ``staged`` to ``final``."""
    def moved(path: str) -> str:
        p = Path(path)
        return str(final / p.relative_to(staged)) if p.is_relative_to(staged) else path

    for acc in result.values():
        prov = acc["provenance"]
        prov.files = {moved(k): v for k, v in prov.files.items()}
        prov.skipped = {moved(k): v for k, v in prov.skipped.items()}


def _display_signal_event(path, output: Path) -> Path:
    """Event display of the first signal event with true and reconstructed p_out in the box."""
    import numpy as np

    from na64reco.display import draw_event
    from na64reco.io.raw import open_raw
    from na64reco.reco.event import reconstruct

    with open_raw(path) as raw:
        n = min(raw.n_events, 500)
        truth = raw.truth(0, n)
        setup = raw.run_setup()  # (errors name the file)
        conditions = raw.run_conditions(setup)
        reco = reconstruct(raw.events(0, n), setup, conditions, str(path))
        p_in, p_out = (np.asarray(reco[k], dtype=float) for k in ("p_in", "p_out"))
        box = _box_edge_gev()  # a fully reconstructed event: both momenta measured, p_out in the box
        candidates = np.nonzero((truth["p_out"] < box) & (p_out < box) & np.isfinite(p_in))[0]
        i = int(candidates[0]) if candidates.size else 0
        draw_event(raw.events(i, i + 1), 0, setup, conditions,
                   title=f"{Path(path).name}: simulated Z' signal, true p_out = {truth['p_out'][i]:.1f} GeV",
                   output=output, source=str(path))
    return output


def _summary_figure(result: dict, output: Path, mass: float) -> Path:
    """p_out and E_ECAL after all cuts but the box (shapes) for MC, signal and the blinded data-like
    run, with the signal box and the blinded range; the signal cut-flow."""
    import numpy as np
    from matplotlib.figure import Figure

    from na64reco.plotting import (
        DPI,
        Blinding,
        axis_unit,
        beam_label,
        blinded_intervals,
        draw_blinded,
        events_label,
        exp_label,
        freeze_layout,
        na64_style,
        range_text,
        symbol,
    )
    from na64reco.selection import load_selection

    selection = load_selection("na64mu_invisible")
    box = selection.signal_box
    blinding = Blinding.of(selection)
    sig_name = f"signal_m{mass:g}GeV"
    n_beam = result["mc_mixture"]["provenance"].n_beam
    with na64_style():
        fig = Figure(figsize=(30, 9.5), layout="constrained")
        axes = fig.subplots(1, 3, width_ratios=(1, 1, 0.9))
        for ax, var in zip(axes[:2], ("p_out", "ecal_energy"), strict=True):
            edges = labels = None
            for name, label, colour in (("mc_mixture", "MC: beam + backgrounds", "#5790fc"),
                                        (sig_name, f"Z' signal, m = {mass:g} GeV", "#f89c20"),
                                        ("data", "data-like run (blinded)", "k")):
                h = result[name]["hists"].get(var)
                if h is None:
                    continue
                h = h[{"stage": "selected"}]
                values = np.asarray(h.values(), dtype=float)
                total = values.sum()
                if total <= 0:
                    continue
                axis = h.axes[-1]
                edges, labels = np.asarray(axis.edges, dtype=float), axis.label
                if name == "data":
                    m = values > 0
                    ax.errorbar(axis.centers[m], values[m] / total, yerr=np.sqrt(values[m]) / total, fmt="o",
                                color=colour, ms=5, label=label, zorder=4)
                else:
                    err = np.sqrt(np.asarray(h.variances(), dtype=float)) / total
                    ax.stairs(values / total, edges, color=colour, lw=2.5, label=label)
                    ax.errorbar(axis.centers, values / total, yerr=err, fmt="none", color=colour, lw=1)
            if edges is None:  # no sample has an event after all cuts: say so instead of an empty axis
                ax.text(0.5, 0.5, f"no event after all cuts but the box ({var})", transform=ax.transAxes, ha="center")
                continue
            ax.set_yscale("log")
            ax.set_ylim(1e-5, 30)
            ax.set_xlim(edges[0], edges[-1])
            ax.set_xlabel(labels)
            ax.set_ylabel(events_label(edges, axis_unit(labels), "Fraction of events"))
            if var == box.variable:
                for edge in (box.min, box.max):
                    if edge is not None:
                        ax.axvline(edge, color="#e42536", ls="--", lw=2.5,
                                   label="signal box: " + range_text(symbol(labels), box.min, box.max, "GeV"))
                draw_blinded(ax, blinded_intervals(blinding, var, edges[0], edges[-1]), "blinded in data")
            ax.legend(loc="upper right", fontsize="x-small",
                      title="after all cuts but the box, normalised to unit area", title_fontsize="x-small",
                      alignment="left", frameon=True, facecolor="white", framealpha=1.0,
                      edgecolor="0.7")
        flow = result[sig_name]["cutflow"].to_dict()["cutflow"]
        y = np.arange(len(flow))[::-1]
        eff = np.array([r["cumulative"] for r in flow], dtype=float)
        axes[2].barh(y, eff, height=0.7, color="#f89c20", label=f"Z' signal, m = {mass:g} GeV")
        for yi, e in zip(y, eff, strict=True):
            axes[2].text(e + 0.01, yi, f"{e:.1%}", va="center", fontsize="xx-small")
        axes[2].set_yticks(y, [r["cut"] for r in flow], fontsize="x-small")
        axes[2].tick_params(axis="y", which="both", left=False, right=False)
        axes[2].set_xlim(0, 1.2)
        axes[2].set_xticks(np.linspace(0, 1, 6))
        axes[2].set_xlabel("Signal efficiency after the cut (cumulative)")
        axes[2].set_ylabel("Cut (applied in order)", fontsize="small")
        axes[2].legend(loc="lower right", fontsize="x-small", frameon=True, facecolor="white", framealpha=1.0,
                       edgecolor="0.7")
        freeze_layout(fig)
        for ax in axes:
            exp_label(ax, data=False, rlabel=f"{beam_label('na64mu', n_beam)} per sample")
        fig.savefig(output, dpi=DPI * 0.75)
    return output


def _box_edge_gev() -> float:
    """Upper edge of the NA64mu signal box (p_out, GeV) from the selection file."""
    from na64reco.selection import load_selection

    return float(load_selection("na64mu_invisible").signal_box.max)
