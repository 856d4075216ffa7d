"""``na64reco cutflow OUTDIR_OR_FILE [--json]``: print the cut-flow of a saved run.

Accepts the output directory of ``na64reco run``, its ``output.coffea`` or its
``cutflow.json``.  Blinded rows stay blinded.
"""

from __future__ import annotations

import json
from pathlib import Path

from na64reco.errors import NA64Error

NAME = "cutflow"
HELP = "print the cut-flow (events, weighted sums, N-1, regions) of a saved run output"


def add_arguments(parser) -> None:
    parser.add_argument("path", metavar="OUTDIR_OR_FILE",
                        help="output directory of `na64reco run`, its output.coffea or its cutflow.json")
    parser.add_argument("--json", action="store_true", help="print JSON")


def load_summary(path: str | Path) -> dict:
    from na64reco.summary import cutflow_summary

    path = Path(path)
    if path.is_dir():
        candidates = [path / "cutflow.json", path / "output.coffea"]
        found = [p for p in candidates if p.is_file()]
        if not found:
            raise NA64Error(f"{path}: no cutflow.json or output.coffea (not a `na64reco run` output)")
        path = found[0]
    if not path.is_file():
        raise NA64Error(f"{path}: file not found")
    if path.suffix == ".json":
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise NA64Error(f"{path}: not valid JSON: {exc}") from None
    if path.suffix == ".coffea":
        from coffea.util import load

        try:
            out = load(path)
        except Exception as exc:
            raise NA64Error(f"{path}: cannot read the coffea output: {exc}") from None
        try:
            summary = cutflow_summary(out)
        except (AttributeError, KeyError, TypeError) as exc:  # a coffea file of something else
            raise NA64Error(f"{path}: {NOT_A_RUN_OUTPUT} ({_what(exc)})") from None
        return json.loads(json.dumps(summary, default=_default))
    raise NA64Error(f"{path}: expected an output directory, output.coffea or cutflow.json")


#: what a file given to the command must be
NOT_A_RUN_OUTPUT = "not the cut-flow of a `na64reco run` output of this version"


def _what(exc: BaseException) -> str:
    return f"missing key {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"


def format_checked(summary, path) -> str:
    """:func:`na64reco.summary.format_summary` of the ``summary`` read from ``path``; a summary
    of another shape (another JSON, another version's) is a one-line :class:`NA64Error`."""
    from na64reco.summary import format_summary

    if not isinstance(summary, dict) or not summary or not all(isinstance(v, dict) for v in summary.values()):
        raise NA64Error(f"{path}: {NOT_A_RUN_OUTPUT} (expected {{dataset: {{provenance, cutflow, nminusone, "
                        "regions, ...}})")
    try:
        return format_summary(summary)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise NA64Error(f"{path}: {NOT_A_RUN_OUTPUT} ({_what(exc)})") from None


def _default(obj):
    if isinstance(obj, set):
        return sorted(obj)
    return obj.item() if hasattr(obj, "item") else str(obj)


def run(args) -> int:
    summary = load_summary(args.path)
    text = format_checked(summary, args.path)  # (checked with --json too)
    print(json.dumps(summary, indent=1) if args.json else text)
    return 0
