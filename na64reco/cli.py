"""The ``na64reco`` command: one entry point, one module per subcommand.

Each module in :mod:`na64reco.commands` defines ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``.  Errors of the library
(:class:`~na64reco.errors.NA64Error`) and of the operating system are printed as one
line on stderr with a non-zero exit code, never as a traceback (``--traceback`` shows
it for debugging).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from na64reco import __version__
from na64reco.errors import NA64Error

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS = (
    "demo",
    "simulate",
    "inspect",
    "verify",
    "calibrate",
    "reco",
    "display",
    "run",
    "cutflow",
    "limit",
    "freeze",
    "unblind",
)


def _load(name: str):
    return importlib.import_module(f"na64reco.commands.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="na64reco",
        description="NA64 raw data to physics results: simulate, calibrate, reconstruct, "
        "select (blinded), count and set limits.",
    )
    parser.add_argument("--version", action="version", version=f"na64reco {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show Python tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = _load(name)
        except ModuleNotFoundError as exc:
            if exc.name != f"na64reco.commands.{name}":
                raise
            continue  # subcommand not built yet
        text = module.HELP.replace("%", "%%")  # argparse %-formats help strings
        p = sub.add_parser(module.NAME, help=text, description=text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (NA64Error, OSError) as exc:
        if args.traceback:
            raise
        message = " ".join(str(exc).split())  # one line, whatever the library below wrote
        print(f"na64reco {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"na64reco {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
