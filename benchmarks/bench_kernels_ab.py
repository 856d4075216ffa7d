"""Before/after speed of the reconstruction kernels, both timed in ONE process.

    git archive <before-commit> | tar -x -C BEFORE_DIR
    python benchmarks/bench_kernels_ab.py --before BEFORE_DIR --file RAW.root [--events 50000] [--repeat 7]

On a shared machine CPU times of separate runs scatter by 20-40 %; here the kernels of an
earlier source tree (``BEFORE_DIR``, executed from its sources with numba's on-disk cache
off) and of this tree run alternately on the same events in memory, and each figure is
the minimum CPU time of ``--repeat`` rounds.  Compared: the tracker hits kernel (with the
earlier tree's de-multiplexer; the whole hit table), the hits the track search gets (this
tree's whole table and the stage's selection vs the kernel's search table: both from this
tree, independent of BEFORE_DIR), the track search kernel (``find_tracks`` on the hits the
stage hands it), the whole tracking stage (the earlier ``stage.py`` calling this tree's
kernels: the difference is the stage's own glue), the ECAL quantities (shower chi2) from a table
of cell energies, the whole calorimeter stage (the earlier ``calo.py`` calling this tree's
waveform kernel: the per-event sums and the ECAL quantities) and the track-match chi2.
The results of both are checked equal before timing.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import time
import types
from pathlib import Path

import numba
import numpy as np
import uproot

import na64reco.reco.calo as calo
import na64reco.reco.tracking.clusters as clusters
import na64reco.reco.tracking.stage as stage
import na64reco.reco.tracking.tracks as tracks_mod
from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup
from na64reco.io.raw import assemble_events, event_branches, open_raw


def _module(name: str, path: Path, edit=lambda s: s, extra: dict | None = None) -> types.ModuleType:
    """The module at ``path`` executed under ``name`` (numba cache off, source edited by ``edit``)."""
    mod = types.ModuleType(name)
    sys.modules[name] = mod
    mod.__dict__.update(extra or {})
    exec(compile(edit(path.read_text()).replace("cache=True", "cache=False"), str(path), "exec"), mod.__dict__)
    return mod


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=np.asarray(a).dtype.kind == "f")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="source tree of the earlier version")
    ap.add_argument("--file", required=True)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    reco = args.before / "na64reco" / "reco"
    with open_raw(args.file) as raw:
        setup = load_setup(raw.setup, run=raw.run)
        conds = load_conditions(setup, raw.run)
    with uproot.open(args.file, array_cache=None) as f:
        events = assemble_events(f["events"].arrays(event_branches(), entry_stop=args.events), args.file)

    old_demux = _module("before_demux", reco / "tracking" / "demux.py")
    old_clusters = _module(  # with the earlier tree's de-multiplexer (whichever of its names it imports)
        "before_clusters", reco / "tracking" / "clusters.py",
        edit=lambda s: re.sub(r"from na64reco\.reco\.tracking\.demux import (\([^)]*\)|[^\n]*)", "", s)
                        .replace("@njit_cached_with(apv, demux, **NO_NRT)", "@numba.njit(**NO_NRT)")
                        .replace("@njit_cached_with(apv, demux)", "@numba.njit"),
        extra={**{k: v for k, v in vars(old_demux).items() if not k.startswith("__")}, "numba": numba})
    old_calo = _module("before_calo", reco / "calo.py")
    old_stage = _module("before_stage", reco / "tracking" / "stage.py")
    old_tracks = _module("before_tracks", reco / "tracking" / "tracks.py")

    cfg, pt, vt, windows = stage._tables(setup, conds)
    a_off, a = clusters._jagged(events["apv"], ("plane", "chan", "a0", "a1", "a2"), "apv", args.file)
    s_off, s = clusters._jagged(events["straw"], ("plane", "tube", "tdc"), "straw", args.file)

    # the fifth and sixth passes' kernels read each plane's neighbour table, which this tree no
    # longer builds: made by the earlier tree's own demux when it has one
    neighbours = (np.stack([old_demux.neighbour_table(pt.table, m) for m in pt.strip_chan])
                  if hasattr(old_demux, "neighbour_table") else None)
    if neighbours is not None:
        pt.neighbours = neighbours  # the earlier tree's search_hits reads it from the tables

    def hits(kernel):
        # kernels since the fourth pass take the search's time windows and MM-singles planes
        # (None: the whole table, as before; since stop 36 a flag ``whole`` and windows that are not read)
        # and since the fifth the channel map and neighbour table of each plane (demux.py), since the
        # seventh the channel map, each channel's strips and each plane's live strips as bits
        params = inspect.signature(kernel.py_func).parameters
        extra = (None, None, np.zeros(pt.n_planes, np.bool_)) if "drop" in params else ()
        if "whole" in params:
            extra = (True, np.zeros(pt.n_planes), np.zeros(pt.n_planes), np.zeros(pt.n_planes, np.bool_))
        tables = {"strip_chan": pt.strip_chan, "neighbours": neighbours, "chan_words": pt.chan_words,
                  "live_words": pt.live_words}
        chan_map = tuple(v for k, v in tables.items() if k in params)
        return lambda: kernel(a_off, a["plane"], a["chan"], a["a0"], a["a1"], a["a2"], s_off, s["plane"], s["tube"],
                              s["tdc"], pt.type, pt.n_strips, pt.pitch, pt.offset, pt.z, pt.sigma, pt.dead, pt.table,
                              *chan_map, pt.apv_threshold(cfg.apv_threshold_sigma), pt.spacing, pt.peaking, pt.tdc_lsb,
                              cfg.drift_t0, pt.drift_velocity, *extra)[:4]  # (a fifth value since the seventh pass)

    drop = (pt.type == 0) & (not cfg.use_mm_singles)

    def whole_then_select():  # this tree's whole hit table, then the stage's selection of the search's hits
        h = clusters.event_hits(events, pt, threshold_sigma=cfg.apv_threshold_sigma, drift_t0=cfg.drift_t0)
        kept, index, *cols = stage._search_selection(h["time"], h["plane"], h["ambiguous"],
                                                     *(h[k] for k in stage.SEARCH_COLUMNS), *windows, drop)
        return cols, kept[h["plane_offsets"]]

    def search_table():  # the search's hits made directly by the kernel (fourth pass)
        h = clusters.search_hits(events, pt, threshold_sigma=cfg.apv_threshold_sigma, drift_t0=cfg.drift_t0,
                                 lo=windows[0], hi=windows[1], drop=drop)
        return [h[k] for k in stage.SEARCH_COLUMNS], h["plane_offsets"]

    def old_search():  # the earlier tree's kernel making the search's table (fourth pass on)
        h = old_clusters.search_hits(events, pt, threshold_sigma=cfg.apv_threshold_sigma, drift_t0=cfg.drift_t0,
                                     lo=windows[0], hi=windows[1], drop=drop)
        return [h[k] for k in stage.SEARCH_COLUMNS], h["plane_offsets"]

    # the ECAL cell energies of every event, (events, channels) MeV, as the calorimeter stage
    # counts them (since the sixth pass the stage sums them per event without this table)
    digits, ev_of, _ = calo.digits_of_events(events, setup, conds)
    ecal = setup.calorimeters["ECAL"]
    ecal_args = (setup, ecal, calo.channel_sums(digits, ev_of, len(events), ecal), conds.calo["ECAL"])
    tracks = stage.reconstruct_tracks(events, setup, conds, return_internals=True)
    res = tracks["_tracks"]
    all_hits = clusters.event_hits(events, pt, threshold_sigma=cfg.apv_threshold_sigma, drift_t0=cfg.drift_t0)
    keep = tracks_mod.in_time(all_hits, *windows)
    if not cfg.use_mm_singles:
        keep &= ~tracks_mod.mm_singles(all_hits, pt.type == 0)
    search_hits = {k: all_hits[k][keep] for k in ("pos", "sigma", "origin")}
    search_hits["plane_offsets"] = np.concatenate([[0], np.cumsum(keep)])[all_hits["plane_offsets"]]
    pairs = {
        "tracker hits kernel": (hits(old_clusters._hits_kernel), hits(clusters._hits_kernel)),
        "search's hits": (whole_then_select, search_table),
        "search's hits kernel": (lambda: old_search(), search_table),
        "ECAL quantities": (lambda: old_calo._ecal_quantities(*ecal_args), lambda: calo._ecal_quantities(*ecal_args)),
        "calorimeter stage": (lambda: old_calo.reconstruct_calo(events, setup, conds),
                              lambda: calo.reconstruct_calo(events, setup, conds)),
        "track search kernel": (lambda: old_tracks.find_tracks(search_hits, len(events), pt.n_planes, vt),
                                lambda: tracks_mod.find_tracks(search_hits, len(events), pt.n_planes, vt)),
        "tracking stage": (lambda: old_stage.reconstruct_tracks(events, setup, conds),
                           lambda: stage.reconstruct_tracks(events, setup, conds)),
        "track match chi2": (lambda: old_stage._match_chi2(tracks, res, vt, setup, cfg),
                             lambda: stage._match_chi2(tracks, res, vt, setup, cfg)),
    }
    print(f"{args.file}: {len(events)} events; CPU s, minimum of {args.repeat} alternating rounds")
    for name, (before, after) in pairs.items():
        same = _equal(before(), after())
        t_b, t_a = [], []
        for _ in range(args.repeat):
            for fn, t in ((before, t_b), (after, t_a)):
                c = time.process_time()
                fn()
                t.append(time.process_time() - c)
        print(f"{name:22s} before {min(t_b):7.4f}  after {min(t_a):7.4f}  speed-up {min(t_b) / min(t_a):5.2f}x  "
              f"outputs {'identical' if same else 'DIFFER'}")


if __name__ == "__main__":
    main()
