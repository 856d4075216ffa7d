"""``na64reco verify``: check raw files whole against their content checksums.

    na64reco verify run1.root run2.root

Reads every tree of every file, recomputes the checksums of each block of entries
and compares them with the stored ones, and checks the values the checksums cannot vouch
for (run numbers, event order, spill counts and beam counts, truth rows and momenta, trigger
words, the time in the spill, the straw TDC, APV and MSADC sample ranges; ``docs/raw-format.md``),
and that the file's setup and run period exist.  Channel and plane numbers are checked by the
reconstruction, not here.  Prints one line per
file ("ok" with the entries of each tree, or what is wrong) and exits 1 if any file
is bad.  Readers verify what they read anyway; this checks files before a campaign
or after a copy.
"""

from __future__ import annotations

import json

NAME = "verify"
HELP = ("check raw files whole against their content checksums and the format's value rules "
        "(exit 1 if any is bad)")


def add_arguments(p):
    p.add_argument("files", nargs="+", help="raw ROOT files to check (paths or URLs: root://, https://, s3://)")
    p.add_argument("--json", action="store_true", help="print one JSON record per file instead of text")


def check(path) -> dict:
    """``{"file", "ok", "entries" or "error"}`` for one file."""
    from na64reco.errors import NA64Error
    from na64reco.io.raw import open_raw

    try:
        with open_raw(path) as raw:
            entries = raw.verify()
            _check_against_setup(raw)
            return {"file": str(path), "ok": True, "entries": entries}
    except NA64Error as exc:
        return {"file": str(path), "ok": False, "error": str(exc)}


def _check_against_setup(raw) -> None:
    """What the reconstruction checks with the file's setup: the setup and the run's period
    exist (a :class:`ConfigError` naming the file), the MSADC samples are raw ADC counts
    ``0..msadc.max_adc``."""
    import awkward as ak

    from na64reco.io.raw import ID_BRANCHES, VERIFY_ENTRIES
    from na64reco.reco.waveform import check_samples

    setup = raw.run_setup()  # (a ConfigError naming the file)
    before = 0  # digits of the reads before (a digit is named by its place in the file)
    for start, stop in raw.scan_ranges("events", VERIFY_ENTRIES):  # (no reconstruction; bounded memory)
        samples = raw.read_verified("events", start, stop, branches=(*ID_BRANCHES, "calo_adc"))["calo_adc"]
        adc = ak.to_numpy(ak.flatten(samples)).reshape(-1, setup.msadc.n_samples)
        check_samples(adc, str(raw.path), lambda i, b=before: f"digit {b + i}", max_adc=setup.msadc.max_adc)
        before += len(adc)


def run(args) -> int:
    results = [check(f) for f in args.files]
    for r in results:
        if args.json:
            print(json.dumps(r))
        elif r["ok"]:
            print(f"{r['file']}: ok ({', '.join(f'{t} {n}' for t, n in r['entries'].items())} entries)")
        else:
            print(f"{r['file']}: BAD: {r['error']}")
    bad = sum(not r["ok"] for r in results)
    if bad and not args.json:
        print(f"{bad} of {len(results)} files failed verification")
    return 1 if bad else 0
