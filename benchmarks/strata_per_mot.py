"""A re-made campaign applied to a period's mis-reconstruction summary (issue 9).

``misreco_<period>.json`` holds the campaign's figures (``benchmarks/misreco_campaign.py``:
``mot``, ``after_cuts_but_box``, the tail fit, ...) and, beside them, per-MOT figures scaled with
that campaign's kept beam muons per MOT (muons after all cuts but the box): the forced-noise
strata's (``forced_noise_*``, ``benchmarks/misreco_forced_noise.py``) and every classified
stratum's (``lone_muon_00``, ``truth_strata``, ``benchmarks/lone_muon_tail.py``).  After the campaign
is re-made (a new selection, trigger or field) this puts its summary into the period file and
re-derives those figures for its kept muons, without re-simulating the strata
(:func:`na64reco.background.lone_muon.per_mot_for_campaign`; strata already classified against the new
campaign are left as they are), and prints old -> new::

    python benchmarks/misreco_campaign.py --mot 10000000 --seed 1 --periods 2022 --period-json NEW
    python benchmarks/strata_per_mot.py --campaign NEW --period-json docs/data --periods 2022

A stratum classified under a different set-up (e.g. the 2023 MS2 field integral doubled in stop
22) keeps its box probabilities; with a larger field integral the box lies further from the beam
kick for the same hit errors, so they are upper values there (docs/periods.md).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from na64reco.background.estimates import MISRECO_FIT_ONLY_KEYS, kept_per_mot
from na64reco.background.lone_muon import per_mot_for_campaign
from na64reco.errors import NA64Error

# the forced-noise figures per MOT (per tracked muon x the kept muons per MOT)
FORCED_NOISE_PER_MOT = ("forced_noise_per_mot", "forced_noise_err", "forced_noise_upper_90",
                        "forced_noise_empty_upper_90", "forced_noise_truncation_per_mot",
                        "forced_noise_tail_00_per_mot", "forced_noise_tail_00_err")


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{path}: cannot read the summary: {exc}") from None
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def apply_campaign(period: dict, campaign: dict) -> tuple[float, float]:
    """Put ``campaign``'s summary keys into ``period`` and scale its forced-noise figures to the
    new kept muons; return (old kept, new kept)."""
    if campaign.get("period") != period.get("period"):
        raise SystemExit(f"campaign of period {campaign.get('period')!r} given for period {period.get('period')!r}")
    try:
        old = kept_per_mot(period, "the period summary")
        new = kept_per_mot(campaign, "the campaign summary")
    except NA64Error as exc:
        raise SystemExit(str(exc)) from None
    for key in MISRECO_FIT_ONLY_KEYS:
        period.pop(key, None)  # a campaign without a converged fit does not write them
    period.update(campaign)
    for key in FORCED_NOISE_PER_MOT:
        if isinstance(period.get(key), (int, float)):
            period[key] = period[key] * new / old
    return old, new


def rescale(period: dict) -> list[tuple[str, float, float, float, float]]:
    """Rewrite ``period``'s strata in place; return (stratum, old kept, new kept, old upper, new upper)."""
    kept = kept_per_mot(period)
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
    ap.add_argument("--period-json", type=Path, required=True, help="directory of misreco_<period>.json to update")
    ap.add_argument("--campaign", type=Path, default=None,
                    help="directory of the re-made campaign's misreco_<period>.json (misreco_campaign.py "
                         "--period-json); without it only the strata are brought to the file's own campaign")
    ap.add_argument("--periods", default="2022,2023")
    args = ap.parse_args(argv)
    for p in args.periods.split(","):
        path = args.period_json / f"misreco_{p}.json"
        period = _read(path)
        if args.campaign is not None:
            old, new = apply_campaign(period, _read(args.campaign / f"misreco_{p}.json"))
            print(f"\n## {p}: campaign of {args.campaign}: kept beam muons {old:.3g} -> {new:.3g} per MOT "
                  f"(x {new / old:.3g}); forced-noise figures scaled")
        rows = rescale(period)
        print(f"\n## {p} ({path}): {len(rows)} strata rescaled")
        print("| stratum | kept per MOT before | now | per-MOT upper before | now |")
        print("|---|---|---|---|---|")
        for name, k0, k1, u0, u1 in rows:
            print(f"| ({name}) | {k0:.3g} | {k1:.3g} | {u0:.2g} | {u1:.2g} |")
        path.write_text(json.dumps(period, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
