"""The mis-reconstruction strata's per-MOT figures re-derived for a re-made campaign (issue 9).

Every classified stratum (``lone_muon_00`` and ``truth_strata`` of ``misreco_<period>.json``)
stores its box probabilities per tracked muon and its per-MOT figures, the latter scaled with
the kept beam muons per MOT of the campaign it was classified against.  After the campaign is
re-made (``benchmarks/misreco_campaign.py --period-json``, keys merged into the period file),
this rewrites the per-MOT figures of every stratum whose kept value differs from the period's
current one (:func:`na64reco.lone_muon.per_mot_for_campaign`), leaving the re-made strata as they
are, and prints old -> new per stratum::

    python benchmarks/strata_per_mot.py --period-json docs/data --periods 2023

A stratum classified under a different set-up (e.g. the 2023 MS2 field integral doubled in stop
22) keeps its box probabilities: with a larger field integral the box lies further from the beam
kick for the same hit errors, so they are upper values there (docs/periods.md).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from na64reco.lone_muon import per_mot_for_campaign


def rescale(period: dict) -> list[tuple[str, float, float, float, float]]:
    """Rewrite ``period``'s strata in place; return (stratum, old kept, new kept, old upper, new upper)."""
    kept = period.get("kept_per_mot") or float(period["after_cuts_but_box"]) / float(period["mot"])
    entries = [("0,0", period, "lone_muon_00")] if "lone_muon_00" in period else []
    entries += [(name, period["truth_strata"], name) for name in period.get("truth_strata", {})]
    rows = []
    for name, holder, key in entries:
        est = holder[key]
        if est.get("kept_per_mot") == kept:
            continue
        stratum = tuple(int(x) for x in name.split(","))
        new = per_mot_for_campaign(est, period, stratum)
        rows.append((name, est.get("kept_per_mot"), kept, est.get("per_mot_upper"), new.get("per_mot_upper")))
        holder[key] = new
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--period-json", type=Path, required=True, help="directory of misreco_<period>.json")
    ap.add_argument("--periods", default="2022,2023")
    args = ap.parse_args(argv)
    for p in args.periods.split(","):
        path = args.period_json / f"misreco_{p}.json"
        period = json.loads(path.read_text())
        rows = rescale(period)
        print(f"\n## {p} ({path}): {len(rows)} strata rescaled")
        print("| stratum | kept per MOT before | now | per-MOT upper before | now |")
        print("|---|---|---|---|---|")
        for name, k0, k1, u0, u1 in rows:
            print(f"| ({name}) | {k0:.3g} | {k1:.3g} | {u0:.2g} | {u1:.2g} |")
        if rows:
            path.write_text(json.dumps(period, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
