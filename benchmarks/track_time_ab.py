"""The tracking with and without the common track time, on the same events (paired).

    python benchmarks/track_time_ab.py FILE.root [FILE.root ...] [--start N] [--max-events N] [--json OUT.json]
    python benchmarks/track_time_ab.py --beam 20000 --run 1 --seed 41
    python benchmarks/track_time_ab.py --signal 10,100,1000 --events 10000 --run 1 --seed 51

``track_time_prob_min`` (``tracking.yaml``) drops a view track whose APV hit times disagree
with one time (``stage.time_consistent``).  Each sample is reconstructed twice, with the
configured value (``new``) and with 0 (``old``, the criterion off), and the tracking cuts of the
selection (:data:`na64reco.background.fake_kicks.TRACKING_CUTS`) applied to both: beam muons with true
p_out > 100 GeV that pass (``tracked``) and those in the box (``fake``), the events lost and
gained, the p_out resolution against truth of the tracked ones (68 % half-width of
``p_out(reco) / p_out(true) - 1`` scaled to the beam energy, and the fraction beyond 10 %), and
per station the view tracks dropped for their times.  ``--beam N`` simulates N beam muons
(calibration trigger, nominal pile-up and noise); ``--signal MASSES`` (MeV) signal samples,
counted in the box after the tracking cuts.
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
from na64reco.reco.tracking import reconstruct_tracks
from na64reco.reco.tracking.stage import FLAG_TIME
from na64reco.selection.cuts import Columns
from na64reco.selection.schema import load_selection


def both(events, setup, cond, source):
    """Tracking columns with the common track time (``new``) and without (``old``)."""
    new = reconstruct_tracks(events, setup, cond, source=source)
    old = reconstruct_tracks(events, setup, cond, source=source, config_overrides={"track_time_prob_min": 0.0})
    return new, old


def passes(cols, selection):
    return tracking_cuts_and_box(Columns(None, {k: np.asarray(v) for k, v in cols.items()}), selection)


def count(events, true_p, setup, cond, source, selection, res, scaled):
    new, old = both(events, setup, cond, source)
    hard = true_p > HARD_P_OUT
    res["events"] += int(hard.size)
    res["hard"] += int(hard.sum())
    oks = {}
    for name, cols in (("new", new), ("old", old)):
        ok, box = passes(cols, selection)
        oks[name] = ok
        t = hard & ok
        res[f"tracked_{name}"] += int(t.sum())
        res[f"fake_{name}"] += int((t & box).sum())
        scaled[name].append(cols["p_out"][t] * (setup.beam.energy / u.GeV) / true_p[t])
    res["lost"] += int((hard & oks["old"] & ~oks["new"]).sum())
    res["gained"] += int((hard & oks["new"] & ~oks["old"]).sum())
    for role in ("in", "out"):
        res[f"time_dropped_{role}"] += int(((np.asarray(new[f"flags_{role}"]) & FLAG_TIME) > 0).sum())


def finish(res, scaled, e_beam):
    for name in ("new", "old"):
        s = np.concatenate(scaled[name]) if scaled[name] else np.zeros(0)
        r = s / e_beam - 1
        res[f"res68_{name}"] = float(np.quantile(np.abs(r), 0.68)) if r.size else float("nan")
        res[f"tail10_{name}"] = float(np.mean(np.abs(r) > 0.1)) if r.size else float("nan")
    return res


def _empty(label):
    keys = ("events", "hard", "tracked_new", "tracked_old", "fake_new", "fake_old", "lost", "gained",
            "time_dropped_in", "time_dropped_out")
    return {"sample": label, **dict.fromkeys(keys, 0)}


def count_file(path, chunk, selection, start=0, max_events=None) -> dict:
    raw = open_raw(path)
    setup = load_setup(raw.setup, run=raw.run)
    cond = load_conditions(setup, raw.run)
    n = len(raw.truth()["p_out"])
    stop = n if max_events is None else min(n, start + max_events)
    res, scaled = _empty(str(path)), {"new": [], "old": []}
    res["first_event"] = start
    for a in range(start, stop, chunk):
        b = min(stop, a + chunk)
        count(raw.events(a, b), np.asarray(raw.truth(a, b)["p_out"]), setup, cond, str(path), selection, res, scaled)
    return finish(res, scaled, setup.beam.energy / u.GeV)


def beam(events, run, seed, selection) -> dict:
    from na64reco.sim.generate import simulate

    setup = load_setup("na64mu", run=run)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "beam.root"
        simulate(setup, events, seed, run, path, process="beam", trigger="calibration")
        res = count_file(path, 100_000, selection)
    res["sample"] = f"beam run {run} seed {seed}"
    return res


def signal(masses, events, run, seed, selection) -> list[dict]:
    from na64reco.sim.generate import simulate

    setup = load_setup("na64mu", run=run)
    cond = load_conditions(setup, run)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, m in enumerate(masses):
            path = Path(tmp) / f"signal_{m}.root"
            simulate(setup, events, seed + i, run, path, process="signal", mass=m * u.MeV, trigger="calibration")
            new, old = both(open_raw(path).events(), setup, cond, str(path))
            ok_n, box_n = passes(new, selection)
            ok_o, box_o = passes(old, selection)
            rows.append({"mass_mev": m, "events": int(len(ok_n)), "box_new": int((ok_n & box_n).sum()),
                         "box_old": int((ok_o & box_o).sum()), "lost": int((ok_o & box_o & ~(ok_n & box_n)).sum()),
                         "gained": int((ok_n & box_n & ~(ok_o & box_o)).sum()),
                         "time_dropped_out": int(((np.asarray(new["flags_out"]) & FLAG_TIME) > 0).sum())})
            print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--chunk", type=int, default=100_000)
    ap.add_argument("--start", type=int, default=0, help="first event of each file")
    ap.add_argument("--max-events", type=int, default=None, help="at most N events of each file")
    ap.add_argument("--beam", type=int, default=0, help="simulate this many beam muons")
    ap.add_argument("--signal", default=None, help="masses in MeV, comma separated")
    ap.add_argument("--events", type=int, default=10_000, help="signal events per mass")
    ap.add_argument("--run", type=int, default=1)
    ap.add_argument("--seed", type=int, default=41)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    selection = load_selection("na64mu_invisible")
    out = {"files": [], "signal": []}
    for f in args.files:
        out["files"].append(count_file(f, args.chunk, selection, args.start, args.max_events))
        print(out["files"][-1], flush=True)
    if args.beam:
        out["files"].append(beam(args.beam, args.run, args.seed, selection))
        print(out["files"][-1], flush=True)
    if args.signal:
        out["signal"] = signal([float(x) for x in args.signal.split(",")], args.events, args.run, args.seed,
                               selection)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
