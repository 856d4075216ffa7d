"""``na64reco freeze``: record the state of an analysis before its box is opened.

Example::

    na64reco freeze --processor na64mu_invisible --calib-tag na64mu-default \\
        --ledger frozen/na64mu_2022.json data/run*.root

The ledger holds SHA-256 hashes of the selection file, the calibration tag, every
conditions file it can resolve to and the detector setup, the library and processor
sources (with the version and git commit), the processor name and options, and each
input file (size and content).  What a run would refuse before it starts (options, files,
setup, calibration coverage) is refused here, before the ledger is written.  A ledger is
never overwritten; freezing the same processor and files again (a ledger in the same
directory, or an unblinding in the registry) needs ``--force-new`` and a new ledger name,
and the new ledger records which ones it supersedes.  See ``docs/unblinding.md``.
"""

from __future__ import annotations

import json

from na64reco.errors import ConfigError

NAME = "freeze"
HELP = "freeze an analysis (selection, calibration, code, options, files) into a ledger before unblinding"


def add_arguments(parser) -> None:
    parser.add_argument("--processor", required=True, help="processor name, e.g. na64mu_invisible")
    parser.add_argument("--calib-tag", required=True, help="calibration tag, e.g. na64mu-default")
    parser.add_argument("--selection", help="selection name or YAML file (default: the processor's)")
    parser.add_argument("--options", default="{}", metavar="JSON",
                        help='processor run options as JSON, e.g. \'{"executor": "futures", "workers": 2}\'')
    parser.add_argument("--bad-spills", metavar="FILE",
                        help="bad-spill list (bad_spills.yaml of `na64reco dqm`) the analysis drops; frozen by "
                             "content, and applied again by `na64reco unblind` (default: none)")
    parser.add_argument("--ledger", required=True, metavar="LEDGER.json", help="ledger file to write (must not exist)")
    parser.add_argument("--force-new", action="store_true",
                        help="freeze again although a ledger for this processor and these files exists in the "
                             "directory of --ledger, or the files were unblinded before (the new ledger records "
                             "what it supersedes)")
    parser.add_argument("--reason", default="",
                        help="why the data are frozen again (required with --force-new when they were unblinded "
                             "before; recorded in the ledger and the unblinding logs)")
    parser.add_argument("--registry", metavar="DIR",
                        help="registry of unblindings (default: $NA64RECO_REGISTRY, else "
                             "~/.local/share/na64reco/unblindings)")
    parser.add_argument("--note", default="", help="free text stored in the ledger")
    parser.add_argument("files", nargs="+", metavar="FILES", help="raw files the analysis will unblind")


def run(args) -> int:
    from na64reco.unblinding import freeze

    try:
        options = json.loads(args.options)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--options is not valid JSON: {exc}") from None
    if not isinstance(options, dict):
        raise ConfigError(f"--options must be a JSON object, got {args.options!r}")
    ledger = freeze(args.ledger, processor=args.processor, calib_tag=args.calib_tag, files=args.files,
                    selection=args.selection, options=options, force_new=args.force_new, note=args.note,
                    reason=args.reason, registry=args.registry, bad_spills=args.bad_spills)
    st = ledger["state"]
    print(f"frozen {st['processor']['name']} into {args.ledger}: state {ledger['state_sha256'][:16]}")
    print(f"  selection {st['selection']['path']} (sha256 {st['selection']['sha256'][:12]})")
    print(f"  calibration tag {st['calibration']['tag']} ({len(st['calibration']['conditions'])} "
          "conditions files)")
    print(f"  code na64reco {st['code']['version']}, git {(st['code']['git_commit'] or 'n/a')[:12]}, "
          f"sources {st['code']['source_sha256'][:12]} ({len(st['code']['source_files'])} files)")
    print(f"  {len(st['files'])} input files, {sum(f['size'] for f in st['files'])} bytes")
    if st.get("bad_spills"):
        print(f"  bad-spill list {st['bad_spills']['path']} ({st['bad_spills']['spills']} spills dropped)")
    for old in ledger["supersedes"]:
        when = f"unblinded {old['unblinded_at']}" if "unblinded_at" in old else f"frozen {old['frozen_at']}"
        print(f"  supersedes {old['ledger']} ({when})")
    if ledger.get("reason"):
        print(f"  reason: {ledger['reason']}")
    return 0
