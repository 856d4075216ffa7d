"""The ``na64reco`` command: one entry point, one module per subcommand.

Each module in :mod:`na64reco.commands` defines ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``.  Errors of the library
(:class:`~na64reco.errors.NA64Error`) and of the operating system are printed as one
line on stderr with exit code 1, never as a traceback (``--traceback`` shows it for
debugging).  Any other exception is a bug in na64reco: one line on stderr says so and
names the file where the full traceback was saved (``na64reco-crash-<time>-<pid>.txt``
in ``NA64RECO_CRASH_DIR`` or the temporary directory), exit code 3.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import signal
import sys
import tempfile
import threading
import traceback
from pathlib import Path

from na64reco import __version__
from na64reco.errors import NA64Error

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS = (
    "demo",
    "simulate",
    "inspect",
    "verify",
    "calibrate",
    "dqm",
    "reco",
    "display",
    "run",
    "cutflow",
    "limit",
    "freeze",
    "unblind",
)


#: Exit codes: user or system error, bug in na64reco, interrupted (128 + SIGINT).
EXIT_ERROR, EXIT_BUG, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 3, 130, 143
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of the output went away (`na64reco cutflow ... | head`)


class _Terminated(BaseException):
    """SIGTERM (a batch system's or ``timeout``'s kill), raised in the main thread so that the
    command unwinds as after Ctrl-C: outputs in progress (temporary siblings) are removed."""


_HANDLER_PID: list[int] = []  # the process that installed :func:`_terminated`


def _terminated(signum, frame):
    if os.getpid() not in _HANDLER_PID:  # a forked worker inherited the handler: die as by default
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise _Terminated()
CRASH_DIR_ENV = "NA64RECO_CRASH_DIR"


class HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help unless the help already says its default,
    the option is required or a flag, or it has no default value; an empty-string default
    reads "(default: none)"."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("%(default)" in text or "default" in text.lower() or not action.option_strings
                or action.required or any(action.default is v for v in (None, False, True, argparse.SUPPRESS))):
            return text
        return text + (" (default: none)" if action.default == "" else " (default: %(default)s)")


def _load(name: str):
    return importlib.import_module(f"na64reco.commands.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="na64reco", formatter_class=HelpFormatter,
        description="NA64 raw data to physics results: simulate, calibrate, reconstruct, "
        "select (blinded), count and set limits.",
    )
    parser.add_argument("--version", action="version", version=f"na64reco {__version__}")
    parser.add_argument("--traceback", action="store_true",
                        help="show the Python traceback of any error instead of a one-line message")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = _load(name)
        except ModuleNotFoundError as exc:
            if exc.name != f"na64reco.commands.{name}":
                raise
            continue  # subcommand not built yet
        # argparse %-formats the help of a subcommand in the list, not the description
        p = sub.add_parser(module.NAME, help=module.HELP.replace("%", "%%"), description=module.HELP,
                           formatter_class=HelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    from na64reco.sim.heap import retain_freed_memory

    retain_freed_memory()  # a command's process is the library's own: its chunks' arrays reuse the heap
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if in_main else None
    _HANDLER_PID[:] = [os.getpid()]
    try:
        return int(args._run(args) or 0)
    except (KeyboardInterrupt, _Terminated) as exc:
        return _stopped(args.command, exc)
    except BrokenPipeError:  # stdout's reader closed it: nothing more to print, no error to report
        try:  # (Python's flush of stdout at exit would fail again)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # (a stdout without a file descriptor)
            pass
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        stopped = _signal_in(exc)  # (a signal inside a compiled kernel: "SystemError ... exception set")
        if stopped is not None:
            return _stopped(args.command, stopped)
        if args.traceback:
            raise
        if isinstance(exc, (NA64Error, OSError)):
            message = " ".join(str(exc).split())  # one line, whatever the library below wrote
            print(f"na64reco {args.command}: error: {message}", file=sys.stderr)
            return EXIT_ERROR
        where = save_crash_report(exc, argv if argv is not None else sys.argv[1:])
        kind = f"{type(exc).__name__}: {' '.join(str(exc).split())}".rstrip(": ")
        saved = (f"the full traceback is in {where}; please report it with that file" if where else
                 "the traceback could not be saved: run again with `na64reco --traceback` and report it")
        print(f"na64reco {args.command}: internal error, a bug in na64reco ({kind[:200]}); {saved}",
              file=sys.stderr)
        return EXIT_BUG
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _signal_in(exc: BaseException) -> BaseException | None:
    """The KeyboardInterrupt or SIGTERM (``_Terminated``) that ``exc`` was raised from or while handling,
    if any: a signal that arrives inside a numba kernel surfaces as a ``SystemError`` ("returned a result
    with an exception set") caused by it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, (KeyboardInterrupt, _Terminated)):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _stopped(command: str, exc: BaseException) -> int:
    """The exit of a command stopped by Ctrl-C (130) or SIGTERM (143)."""
    if isinstance(exc, _Terminated):
        print(f"na64reco {command}: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    print(f"na64reco {command}: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def save_crash_report(exc: BaseException, argv: list[str]) -> Path | None:
    """Write the command line, versions and traceback of ``exc`` to a new crash file;
    return its path (None if no file could be written)."""
    now = datetime.datetime.now(datetime.UTC)
    folder = Path(os.environ.get(CRASH_DIR_ENV) or tempfile.gettempdir())
    path = folder / f"na64reco-crash-{now:%Y%m%dT%H%M%SZ}-{os.getpid()}.txt"
    text = (f"na64reco {__version__} crashed at {now.isoformat()}\n"
            f"command: na64reco {' '.join(argv)}\n"
            f"cwd: {os.getcwd()}\npython: {sys.version.split()[0]} ({sys.executable})\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(path, "x") as fh:
            fh.write(text)
    except OSError:
        return None
    return path


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
