"""The track match with and without the incoming-hit term, on the same events (paired).

    python benchmarks/hit_match_ab.py FILE.root [FILE.root ...] [--chunk 100000] [--max-events N] [--json OUT.json]
    python benchmarks/hit_match_ab.py --signal 10,100,1000 --events 20000 [--run 1] [--seed 21]

``track_match_chi2`` matches a projection without an incoming track to the incoming view's
in-time hits (``na64reco/reco/tracking/stage._hit_match_terms``); before, such a projection
was left out of the match.  For each raw file (forced samples of
``benchmarks/misreco_forced_noise.py --keep-files``: beam muons, calibration trigger) this
reconstructs once and applies the tracking cuts of the selection
(:data:`na64reco.background.fake_kicks.TRACKING_CUTS`) with both matches: beam muons with true p_out >
100 GeV that pass (``tracked``), and those reconstructed in the box (``fake``), plus the
p_out resolution against truth of the tracked ones (``E_beam p_out(reco) / p_out(true)``:
68 % half-width and the fraction beyond 10 %).  ``--signal MASSES`` (MeV) simulates signal
samples (calibration trigger, run ``--run``) and counts the events in the box after the
tracking cuts, both ways, with the events lost and gained.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import hepunits as u
import numpy as np

from na64reco.background.fake_kicks import HARD_P_OUT, tracking_cuts_and_box
from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw
from na64reco.reco.tracking import reconstruct_tracks, stage
from na64reco.selection.cuts import Columns
from na64reco.selection.schema import load_selection


def both_matches(events, setup, cond, source):
    """Tracking columns with the new match and the match without the hit term (``old``)."""
    out = reconstruct_tracks(events, setup, cond, source=source, return_internals=True)
    cfg, _, vt, _ = stage._tables(setup, cond)
    h = out["_hits"]
    new = stage._match_chi2(out, out["_tracks"], vt, setup, cfg, hits=(h["plane_offsets"], h["pos"], out["_usable"]))
    old = stage._match_chi2(out, out["_tracks"], vt, setup, cfg, hits=None)
    cols = {k: np.asarray(v) for k, v in out.items() if not k.startswith("_")}
    return cols, new, old


def passes(cols, match, selection):
    return tracking_cuts_and_box(Columns(None, {**cols, "track_match_chi2": match}), selection)


def count_file(path, chunk: int, selection, max_events: int | None = None) -> dict:
    raw = open_raw(path)
    setup = load_setup(raw.setup, run=raw.run)
    cond = load_conditions(setup, raw.run)
    n = len(raw.truth()["p_out"])
    n = n if max_events is None else min(n, max_events)
    res = {"file": str(path), "events": 0, "hard": 0}
    scaled = {"new": [], "old": []}
    for start in range(0, n, chunk):
        events = raw.events(start, min(n, start + chunk))
        true_p = np.asarray(raw.truth(start, min(n, start + chunk))["p_out"])
        cols, new, old = both_matches(events, setup, cond, str(path))
        hard = true_p > HARD_P_OUT
        res["events"] += int(hard.size)
        res["hard"] += int(hard.sum())
        for name, m in (("new", new), ("old", old)):
            ok, box = passes(cols, m, selection)
            t = hard & ok
            res[f"tracked_{name}"] = res.get(f"tracked_{name}", 0) + int(t.sum())
            res[f"fake_{name}"] = res.get(f"fake_{name}", 0) + int((t & box).sum())
            scaled[name].append(cols["p_out"][t] * (setup.beam.energy / u.GeV) / true_p[t])
        ok_n, _ = passes(cols, new, selection)
        ok_o, _ = passes(cols, old, selection)
        res["lost"] = res.get("lost", 0) + int((hard & ok_o & ~ok_n).sum())
        res["gained"] = res.get("gained", 0) + int((hard & ok_n & ~ok_o).sum())
    e = setup.beam.energy / u.GeV
    for name in ("new", "old"):
        s = np.concatenate(scaled[name]) if scaled[name] else np.zeros(0)
        r = s / e - 1
        res[f"res68_{name}"] = float(np.quantile(np.abs(r), 0.68)) if r.size else float("nan")
        res[f"tail10_{name}"] = float(np.mean(np.abs(r) > 0.1)) if r.size else float("nan")
    return res


def signal(masses, events: int, run: int, seed: int, selection) -> list[dict]:
    from na64reco.sim.generate import simulate

    setup = load_setup("na64mu", run=run)
    cond = load_conditions(setup, run)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, m in enumerate(masses):
            path = Path(tmp) / f"signal_{m}.root"
            simulate(setup, events, seed + i, run, path, process="signal", mass=m * u.MeV, trigger="calibration")
            raw = open_raw(path)
            cols, new, old = both_matches(raw.events(), setup, cond, str(path))
            ok_n, box = passes(cols, new, selection)
            ok_o, _ = passes(cols, old, selection)
            rows.append({"mass_mev": m, "events": int(len(new)), "box_new": int((ok_n & box).sum()),
                         "box_old": int((ok_o & box).sum()), "lost": int((ok_o & ~ok_n & box).sum()),
                         "gained": int((ok_n & ~ok_o & box).sum())})
            print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--chunk", type=int, default=100_000)
    ap.add_argument("--max-events", type=int, default=None, help="the first N events of each file")
    ap.add_argument("--signal", default=None, help="masses in MeV, comma separated")
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--run", type=int, default=1)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    selection = load_selection("na64mu_invisible")
    out = {"files": [], "signal": []}
    for f in args.files:
        out["files"].append(count_file(f, args.chunk, selection, args.max_events))
        print(out["files"][-1], flush=True)
    if args.signal:
        out["signal"] = signal([float(x) for x in args.signal.split(",")], args.events, args.run, args.seed,
                               selection)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
