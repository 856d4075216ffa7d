"""What an unblinding produces: the run over the frozen files, its counts, plots and summary."""

from __future__ import annotations

from pathlib import Path

from na64reco.errors import BlindingError
from na64reco.unblinding.state import state_hash


def _result_from_output(out: dict) -> dict:
    """Counts of the unblinded run: signal box and sidebands per dataset and in total."""
    datasets = {}
    for name, acc in out.items():
        if "regions" not in acc:
            datasets[name] = {"events_processed": 0}
            continue
        prov = acc["provenance"]
        regions = {k: v.to_dict() for k, v in acc["regions"].items()}
        datasets[name] = {"regions": regions, "n_beam": int(prov.n_beam),
                          "events_processed": int(prov.events_processed),
                          "events_skipped": int(prov.events_skipped),
                          "unblinded_by": prov.unblinded_by}
    from na64reco.selection.cuts import BLINDED, BOX

    total: dict[str, dict] = {}
    for d in datasets.values():
        for region, r in d.get("regions", {}).items():
            if r["events"] == BLINDED:
                raise BlindingError(f"region {region} is still blinded after unblinding: the processor "
                                    "did not accept the token")
            t = total.setdefault(region, {"events": 0})
            t["events"] += int(r["events"])
    return {"signal_box": total.get(BOX, {"events": 0}),
            "sidebands": {k: v for k, v in total.items() if k != BOX},
            "n_beam": sum(d.get("n_beam", 0) for d in datasets.values()),
            "datasets": datasets}


def run_unblinded(ledger: dict, token, output_dir: Path | None) -> dict:
    """Run the frozen processor with ``token`` over the frozen files; write outputs."""
    from na64reco.runner import RunOptions, make_processor, run_files, write_outputs

    st = ledger["state"]
    opts = RunOptions(processor=st["processor"]["name"], calib_tag=st["calibration"]["tag"],
                      selection=st["selection"]["path"],
                      check_cache=False,  # the run on the record checks every file itself
                      **st["processor"]["options"])
    proc = make_processor(opts, unblind=token)
    _apply_frozen_bad_spills(proc, st.get("bad_spills"))
    out = run_files({"unblinded": [f["path"] for f in st["files"]]}, opts, processor_instance=proc)
    result = _result_from_output(out)
    if output_dir is not None:
        write_outputs(out, output_dir, plots=False)  # output.coffea, hists.root, cut-flow, provenance
        _final_plots(out, st, proc.selection, output_dir / "plots")  # the selection the token opened
    return result


def _apply_frozen_bad_spills(proc, frozen: dict | None) -> None:
    """Give the processor the frozen bad-spill list, read once here and checked against the frozen
    SHA-256 before any event is read: a list edited after the checks before the unblinding (which
    compared it too) is an error, not other spills dropped from the box's count."""
    if not frozen:
        return
    sha256 = proc.use_bad_spills(frozen["path"])
    if sha256 != frozen["sha256"]:
        raise BlindingError(f"the bad-spill list {frozen['path']} has SHA-256 {sha256[:12]}..., frozen "
                            f"{str(frozen['sha256'])[:12]}...: it changed during the unblinding; restore the "
                            "frozen list")


def _final_plots(out: dict, state: dict, sel, plot_dir: Path) -> None:
    """Unblinded cut-flow, N-1 of each cut, and the box variable with box and sidebands, drawn with the
    selection ``sel`` the run used (not the file read again: it could have changed since)."""
    from na64reco.plotting import (
        DPI,
        cut_window,
        figure_hist1d,
        na64_style,
        plot_context,
        plot_cutflow,
        range_text,
        value_unit,
    )
    from na64reco.selection.cuts import BOX

    plot_dir.mkdir(parents=True, exist_ok=True)
    for dataset, acc in out.items():
        h = acc.get("nminus1", {}).get(BOX)
        if h is None:
            continue
        ctx = plot_context(dataset, acc, sel)
        # the procedure's one dataset is named "unblinded": say it once in the titles
        what = "unblinded data" if dataset == "unblinded" else f"{dataset} (unblinded)"
        plot_cutflow(acc["cutflow"], f"{what}: cut-flow", plot_dir / f"{dataset}_cutflow.png", ctx)
        with na64_style():
            for name, hn in acc["nminus1"].items():
                if name == BOX:
                    continue
                if "module" in hn.axes.name:
                    hn = hn.project(hn.axes[-1].name)
                lo, hi, text = cut_window(sel, name, ctx)
                figure_hist1d(hn, ctx, title=f"{what}: N-1 of {name}", lo=lo, hi=hi, cut_label=text,
                              labels=["data (unblinded)"]).savefig(plot_dir / f"{dataset}_nminus1_{name}.png", dpi=DPI)
            box = sel.signal_box
            unit = value_unit(box.variable, sel.setup)
            spans = [(box.min, box.max, "signal box: " + range_text(ctx.sym(box.variable), box.min, box.max, unit),
                      "tab:red")]
            spans += [(sb.min, sb.max, f"sideband {sb.name}: " + range_text(ctx.sym(sb.variable), sb.min, sb.max,
                                                                             unit), "tab:blue")
                      for sb in sel.sidebands if sb.fails is None and sb.variable == box.variable]
            title = f"{state['processor']['name']}: {what}\n(state {state_hash(state)[:12]})"
            figure_hist1d(h, ctx, title=title, labels=["data (unblinded), all cuts but the box"],
                          spans=spans).savefig(plot_dir / f"{dataset}_unblinded_{box.variable}.png", dpi=DPI)


def format_result(res) -> str:
    """Text summary of an :class:`~na64reco.unblinding.procedure.UnblindingResult`."""
    rec = res.record
    r = rec["result"]
    lines = []
    if not res.ran:
        lines.append(f"this frozen state was unblinded before, on {rec['time_utc']} by {rec['user']}; "
                     "the recorded result is shown (nothing was re-run)")
        for change in res.changed_since:
            lines.append(f"warning: since then, {change} (a new result needs a new freeze: "
                         "na64reco freeze --force-new)")
    lines.append(f"ledger {rec['ledger']} (state {rec['state_sha256'][:12]}), processor {rec['processor']}")
    lines.append(f"signal box: {r['signal_box']['events']} observed events")
    for name, v in r.get("sidebands", {}).items():
        lines.append(f"sideband {name}: {v['events']} events")
    lines.append(f"beam particles on target: {r.get('n_beam', 0)}")
    for old in rec.get("supersedes", []):
        when = old.get("unblinded_at") or old.get("frozen_at")
        lines.append(f"supersedes {old['ledger']} (state {old['state_sha256'][:12]}, {when})")
    if rec.get("reason"):
        lines.append(f"reason: {rec['reason']}")
    for note in rec.get("notes", []):
        lines.append(f"note: {note}")
    if res.ran and rec.get("output_dir"):
        lines.append(f"outputs in {rec['output_dir']}")
    return "\n".join(lines)
