"""``na64reco inspect``: what a raw file holds (setup, run, events, exposure, processes)."""

from __future__ import annotations

import json

NAME = "inspect"
HELP = "summarise a raw file: format, setup, run, events, spills, exposure and truth processes"


def add_arguments(p):
    p.add_argument("files", nargs="+", help="raw ROOT files (paths or URLs: root://, https://, s3://)")
    p.add_argument("--json", action="store_true", help="print JSON")


def summarise(path) -> dict:
    import numpy as np

    from na64reco.io.raw import PROCESSES, open_raw

    with open_raw(path) as raw:
        spills = raw.spills()
        info = {
            "file": str(path), "setup": raw.setup, "run": raw.run,
            "format_version": raw.meta["format_version"], "events": raw.n_events,
            "spills": int(len(spills["spill"])), "beam_particles": int(spills["n_beam"].sum()),
            "triggered": int(spills["n_triggered"].sum()), "has_truth": raw.has_truth,
            "producer": raw.meta.get("producer", "?"),
        }
        if raw.has_truth:
            codes = raw.truth()["process"]
            names = {v: k for k, v in PROCESSES.items()}
            info["processes"] = {
                names.get(int(c), str(c)): int(n) for c, n in zip(*np.unique(codes, return_counts=True), strict=True)
            }
    return info


def run(args) -> int:
    infos = [summarise(f) for f in args.files]
    if args.json:
        print(json.dumps(infos if len(infos) > 1 else infos[0], indent=2))
        return 0
    for i in infos:
        unit = "MOT" if i["setup"] == "na64mu" else "EOT"
        print(
            f"{i['file']}: {i['setup']} run {i['run']}, format v{i['format_version']}, {i['events']} events "
            f"in {i['spills']} spills, {i['beam_particles']} {unit}, {'simulation' if i['has_truth'] else 'data'}"
            f" ({i['producer']})"
        )
        for name, n in i.get("processes", {}).items():
            print(f"  {name:14s} {n}")
    return 0
