"""``na64reco unblind``: open the signal box of a frozen analysis, once, on the record.

Example::

    na64reco unblind --ledger frozen/na64mu_2022.json --i-understand-this-opens-the-box \\
        --output unblinded/

Refuses (exit 1) when the selection, calibration, code, options or input files differ
from the frozen ledger, naming each difference.  Runs the processor unblinded, writes
the counts (signal box and sidebands) and plots to ``--output``, and appends the result
to the append-only audit log (default ``unblinding_audit.jsonl`` beside the ledger, which
is always written; ``--audit-log`` adds another).  Unblinding the same frozen state again
prints the recorded result and runs nothing.  See ``docs/unblinding.md``.
"""

from __future__ import annotations

NAME = "unblind"
HELP = "open the signal box of a frozen analysis (once; recorded in an audit log)"


def add_arguments(parser) -> None:
    parser.add_argument("--ledger", required=True, metavar="LEDGER.json", help="ledger written by na64reco freeze")
    parser.add_argument("--i-understand-this-opens-the-box", dest="confirm", action="store_true",
                        help="required: confirms that the signal box is opened for good")
    parser.add_argument("--output", metavar="DIR",
                        help="directory for counts, cut-flow and plots; it must not exist unless --overwrite "
                             "(default: none, the result is printed and logged only)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --output directory as a whole (nothing of it is kept)")
    parser.add_argument("--audit-log", metavar="FILE",
                        help="additional audit log (JSON lines, append-only); the log beside the "
                             "ledger is always written (default: none)")
    parser.add_argument("--force-new", action="store_true",
                        help="unblind although the same data were unblinded with another frozen state that "
                             "this ledger does not supersede (needs --reason)")
    parser.add_argument("--reason", default="", help="why (with --force-new; recorded in the audit logs)")
    parser.add_argument("--registry", metavar="DIR",
                        help="registry of unblindings (default: $NA64RECO_REGISTRY, else "
                             "~/.local/share/na64reco/unblindings)")


def run(args) -> int:
    from na64reco.unblinding import format_result, unblind

    res = unblind(args.ledger, confirm=args.confirm, output_dir=args.output, audit_log=args.audit_log,
                  registry=args.registry, force_new=args.force_new, reason=args.reason, overwrite=args.overwrite)
    print(format_result(res))
    return 0
