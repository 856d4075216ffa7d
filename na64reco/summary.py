"""The cut-flow summary of a run's output: a JSON-ready dict (:func:`cutflow_summary`) and its
text (:func:`format_summary`, what ``na64reco run`` and ``na64reco cutflow`` print).

Light on purpose (no numpy, no coffea): ``na64reco cutflow OUTDIR`` prints a saved
``cutflow.json`` without importing the analysis stack.
"""

from __future__ import annotations

#: What a cut-flow cell shows in place of a count the blinding withholds.
BLINDED = "blinded"


def cutflow_summary(out: dict) -> dict:
    """Cut-flow, N-1, regions and key provenance of each dataset (JSON-ready)."""
    summary = {}
    for dataset, acc in out.items():
        prov = acc["provenance"]
        entry = {"provenance": {k: v for k, v in prov.to_dict().items() if k != "files"}}
        entry["provenance"]["events_total"] = getattr(prov, "events_total", None)
        # (data read with a calibration other than the reference: its protected events withheld as well)
        entry["provenance"]["reference_withheld"] = any(rec.get("reference_withheld") for rec in prov.files.values())
        entry["provenance"]["data"] = any(rec.get("data") for rec in prov.files.values())
        if "cutflow" in acc:
            entry.update(acc["cutflow"].to_dict())
            entry["regions"] = {k: v.to_dict() for k, v in acc["regions"].items()}
        summary[dataset] = entry
    return summary


def cutflow_lines(rows) -> list[str]:
    """The cut-flow rows (``cut``, ``events``, ``sumw``, ``sumw_err``, ``efficiency``,
    ``cumulative``) as a text table with its header; a blinded row shows only BLINDED."""
    lines = [f"{'cut':<24}{'events':>12}{'weighted':>14}{'+-':>11}{'eff':>9}{'cumul':>9}"]
    for r in rows:
        if r["events"] == BLINDED:
            lines.append(f"{r['cut']:<24}{BLINDED:>12}{BLINDED:>14}")
            continue
        lines.append(f"{r['cut']:<24}{r['events']:>12d}{r['sumw']:>14.6g}{r['sumw_err']:>11.3g}"
                     f"{r['efficiency']:>9.4f}{r['cumulative']:>9.4f}")
    return lines


def nminusone_lines(rows) -> list[str]:
    """The N-1 rows (``cut``, ``events``, ``sumw``; either may be BLINDED), indented."""
    lines = []
    for r in rows:
        ev = r["events"] if r["events"] == BLINDED else f"{r['events']:d}"
        sw = r["sumw"] if r["sumw"] == BLINDED else f"{r['sumw']:.6g}"
        lines.append(f"  {r['cut']:<28}{ev:>12}{sw:>14}")
    return lines


def format_summary(summary: dict) -> str:
    """The text form of :func:`cutflow_summary` (what ``na64reco cutflow`` prints)."""
    lines = []
    for dataset, entry in summary.items():
        p = entry["provenance"]
        lines.append(f"== {dataset}: {p['processor']}, selection {p['selection']} "
                     f"(sha256 {p['selection_sha256'][:12]}), calib tag {p['calib_tag']}, "
                     f"na64reco {p['code_version']}")
        total = p.get("events_total")
        adds_up = total is None or p["events_processed"] + p["events_skipped"] == total
        lines.append(f"   events: {p['events_processed']} processed + {p['events_skipped']} skipped "
                     f"{'=' if adds_up else '!='} {total} total; beam particles on target (MOT/EOT): "
                     f"{p['n_beam']} in {p['n_spills']} spills")
        if not adds_up:  # a run accounts for every event: an edited or damaged output
            lines.append(f"   WARNING: the events do not add up ({p['events_processed'] + p['events_skipped']} "
                         f"of {total}): this output was edited or is not a whole run's")
        for path, rec in p["skipped"].items():
            lines.append(f"   skipped {path} ({rec['events']} events): {rec['reason']}")
        if p.get("partial_spills"):
            lost = sum(s["n_beam"] for s in p["partial_spills"])
            lines.append(f"   not in MOT/EOT: {len(p['partial_spills'])} spills with skipped events "
                         f"({lost} beam particles; see na64reco.exposure)")
        if p.get("excluded_spills"):
            lost = sum(s["n_beam"] for s in p["excluded_spills"])
            sha = f" (sha256 {p['bad_spills_sha256'][:12]})" if p.get("bad_spills_sha256") else ""
            lines.append(f"   not in MOT/EOT: {len(p['excluded_spills'])} bad spills of {p['bad_spills']}{sha} "
                         f"({lost} beam particles, {p['events_excluded']} events dropped)")
        if "cutflow" not in entry:
            lines.append("   no events were processed")
            continue
        withheld = _withheld(entry)
        if withheld is not None:
            lines.append(f"   withheld (blinded region, before the cut-flow): {withheld} events "
                         "(the 'initial' row counts processed minus bad-spill events minus withheld)")
            lines.append("   (withheld: the box variable in the box or not measured, in NA64mu mostly events without "
                         "an outgoing track; simulation keeps them: compare data and simulation after the cuts "
                         "that need the box variable)")
            if entry["provenance"].get("reference_withheld"):
                lines.append("   (the calibration is not the reference one: the events protected by the reference "
                             "reconstruction are withheld too, so a sideband next to the box may count short of the "
                             "simulation)")
        lines += cutflow_lines(entry["cutflow"])
        box = (entry.get("regions") or {}).get("signal_box") or {}
        if withheld is None and not p.get("data") and p.get("n_beam") and isinstance(box.get("events"), int):
            # (a simulation writes only triggered events: the fractions above leave the trigger out)
            n, sumw = box["events"], box.get("sumw")
            weighted = isinstance(sumw, float) and abs(sumw - n) > 1e-9 * max(n, 1)
            lines.append(f"   box events per simulated beam particle: {n} / {p['n_beam']} = {n / p['n_beam']:.4g}"
                         + (f"; weighted, per beam particle on target: {sumw / p['n_beam']:.4g}" if weighted else "")
                         + " (the fractions above are of the written, triggered events; a signal's efficiency for "
                         "a limit is per simulated beam particle: na64reco.efficiency)")
        lines.append("N-1 (all cuts and box but one):")
        if withheld is not None:  # each row but the box's own requires the box, which is withheld
            lines.append("  (blinded data: every row but the box's own needs the box, which is withheld except")
            lines.append("   for the visible control regions of selections/blinding.yaml: a 0 says nothing about it)")
        lines += nminusone_lines(entry["nminusone"])
        lines.append("regions:")
        for name, r in entry["regions"].items():
            ev = r["events"] if r["events"] == BLINDED else f"{r['events']:d}"
            sw = r["sumw"] if r["sumw"] == BLINDED else f"{r['sumw']:.6g} +- {r['sumw_err']:.3g}"
            lines.append(f"  {name:<28}{ev:>12}  {sw}")
        lines.append("")
    return "\n".join(lines)


def _withheld(entry: dict) -> int | None:
    """Events of a blinded (data) cut-flow removed by blinding before its ``initial`` row.

    It is ``events_processed`` minus the events of bad spills dropped before the cut-flow
    (``events_excluded``) minus the ``initial`` row, numbers every output shows anyway; it counts
    every event of the protected region, whatever the cuts say, so it tells nothing about the
    signal box (see :mod:`na64reco.selection.blinding`).  None for a cut-flow that is not
    blinded (simulation, unblinded data).
    """
    rows = entry.get("cutflow") or []
    if not rows or not any(r["events"] == BLINDED for r in rows) or rows[0]["events"] == BLINDED:
        return None
    p = entry["provenance"]
    return int(p["events_processed"]) - int(p.get("events_excluded") or 0) - int(rows[0]["events"])
