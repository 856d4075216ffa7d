r"""What the blinding's reference reconstruction costs when data is run with constants that are
not the package's default tag (reprocessing after a calibration change), in ONE process.

    python benchmarks/bench_reference_reco.py DATA.root [ROUNDS] [--chunksize 50000]

DATA.root: a data-like file (``na64reco simulate ... --no-truth``) of the NA64mu setup.  The
script copies the package's ``calib/`` to a temporary folder (``NA64RECO_CALIB``) and adds two
tags there: ``ecal-1pc`` (a calorimeter payload with one ECAL gain 1 % higher) and
``mm1x-10um`` (a tracker payload with MM1X moved by 10 um).  Each round runs, alternately,
a plain uproot read of the ``events`` tree and ``run_files`` (iterative) with:

* the default tag (the package's constants: no reference reconstruction),
* each new tag as the library runs it (the reference runs again only the stage whose
  payload differs: :func:`na64reco.selection.blinding.reference_protected` with ``reco``),
* each new tag with the whole reference reconstruction (``reco`` not passed: every stage
  again, as before stop 26).

Printed: the minimum CPU time of each over the rounds, and the reference's cost as the extra
CPU time over the default tag's run.  The outputs of the partial and the whole reference are
compared first (every cut-flow row, region, histogram and the provenance, to the last bit:
``bench_chain_ab.canonical``); the script stops if they differ.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import uproot
import yaml
from bench_chain_ab import canonical

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TAGS = {"ecal-1pc": "calorimeter", "mm1x-10um": "tracker"}


def _calibration_copy(folder: Path) -> Path:
    """The package's calib/ with the tags of :data:`TAGS` added."""
    from na64reco.resources import package_calib_dir

    root = folder / "calib"
    shutil.copytree(package_calib_dir(), root)
    base = yaml.safe_load((root / "tags" / "na64mu-periods-v1.yaml").read_text())
    for tag, payload in TAGS.items():
        source = root / "conditions" / "na64mu" / payload
        version = max(int(p.stem[1:]) for p in source.glob("v*.yaml")) + 1
        body = yaml.safe_load((source / "v001.yaml").read_text())
        body["version"] = version
        if payload == "calorimeter":
            body["detectors"]["ECAL"]["gain_mev_per_adc"][0] *= 1.01
        else:
            body["planes"]["MM1X"]["alignment_mm"] += 0.010
        (source / f"v{version:03d}.yaml").write_text(yaml.safe_dump(body))
        files = {**base["payloads"], payload: [f"na64mu/{payload}/v{version:03d}.yaml"]}
        entry = {**base, "tag": tag, "payloads": files}
        (root / "tags" / f"{tag}.yaml").write_text(yaml.safe_dump(entry))
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", help="a data-like NA64mu raw file (simulate --no-truth)")
    ap.add_argument("rounds", type=int, nargs="?", default=5)
    ap.add_argument("--chunksize", type=int, default=50000)
    args = ap.parse_args()
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NA64RECO_CALIB"] = str(_calibration_copy(Path(tmp)))
        _measure(args)


def _measure(args) -> None:
    from na64reco.io.raw import open_raw
    from na64reco.runner import RunOptions, run_files
    from processors.base import InvisibleProcessor

    with open_raw(args.file) as raw:
        if raw.has_truth or raw.setup != "na64mu":
            raise SystemExit(f"{args.file}: expected a data-like na64mu file (simulate --no-truth)")
    partial_reference = InvisibleProcessor.reference_protected

    def whole_reference(self, events, conditions, info, reco=None):
        return partial_reference(self, events, conditions, info)

    def read():
        with uproot.open(args.file) as f:
            return len(f["events"].arrays(library="ak"))

    def run(tag, whole=False):
        def go():
            InvisibleProcessor.reference_protected = whole_reference if whole else partial_reference
            try:
                return run_files({"data": [args.file]},
                                 RunOptions("na64mu_invisible", executor="iterative", chunksize=args.chunksize,
                                            calib_tag=tag))
            finally:
                InvisibleProcessor.reference_protected = partial_reference
        return go

    cases = {"read": read, "default tag": run(None)}
    for tag in TAGS:
        cases[f"{tag}, stage"] = run(tag)
        cases[f"{tag}, whole"] = run(tag, whole=True)
    for tag in TAGS:
        if canonical(cases[f"{tag}, stage"]()) != canonical(cases[f"{tag}, whole"]()):
            raise SystemExit(f"tag {tag}: the outputs with the stage's reference and the whole one DIFFER")
    print(f"{args.file}: {read()} events, chunks of {args.chunksize}; outputs of the stage's and the whole "
          "reference identical for both tags")
    spent = collections.defaultdict(list)
    for _ in range(args.rounds):
        for name, fn in cases.items():
            c = time.process_time()
            fn()
            spent[name].append(time.process_time() - c)
    best = {k: min(v) for k, v in spent.items()}
    base = best["default tag"]
    print(f"CPU s, minimum of {args.rounds} rounds (median in brackets); extra = over the default tag's run")
    for name, v in best.items():
        med = sorted(spent[name])[len(spent[name]) // 2]
        extra = "" if name in ("read", "default tag") else f"   extra {v - base:+.3f} s ({(v - base) / base:+.0%})"
        print(f"  {name:<22} {v:7.3f} s  ({med:.3f}){extra}")
    for tag, payload in TAGS.items():
        saved = 1 - (best[f"{tag}, stage"] - base) / (best[f"{tag}, whole"] - base)
        print(f"{tag} ({payload} payload): the reference costs {saved:.0%} less with only its stage run again")


if __name__ == "__main__":
    main()
