"""Outputs that appear whole or not at all.

A command that writes an output directory writes into a temporary sibling
(``.NAME.tmp-<pid>`` in the same parent, hence the same file system) and renames it to
its final name only when everything is written, so an interrupted or crashed command
never leaves a directory that looks complete.  An existing output is refused
(:class:`OutputExists`) unless ``overwrite`` is given; then nothing of the old output
survives (it is replaced as a whole, not written over file by file).  Single files are
written to a temporary sibling and moved into place with :func:`os.replace`.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from na64reco.errors import NA64Error


class OutputExists(NA64Error, FileExistsError):
    """The output of a command exists and overwriting it was not asked for."""


def _temp_sibling(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}")


def check_new_output(path: str | Path, *, overwrite: bool = False, inputs: Iterable[str | Path] = (),
                     option: str = "--overwrite") -> Path:
    """Refuse an existing ``path`` unless ``overwrite`` (call it before any work is done).

    Overwriting is refused too when ``path`` holds the current directory or one of
    ``inputs``, or is one of ``inputs`` (also through a hard or symbolic link): replacing it
    would delete them.  Returns ``path`` made absolute.
    """
    shown, path = path, Path(os.path.abspath(path))
    if not (path.exists() or path.is_symlink()):
        return path
    what = "directory" if path.is_dir() else "file"
    if not overwrite:
        raise OutputExists(f"{shown}: output {what} exists; give {option} (overwrite=True from Python) to "
                           "replace it (nothing of it is kept) or choose another output")
    if path.is_dir() and not path.is_symlink():
        for inner in (Path.cwd(), *(Path(os.path.abspath(p)) for p in inputs)):
            if inner == path or path in inner.parents:
                raise OutputExists(f"{shown}: refusing to replace this output {what}: it holds {inner} "
                                   "(an input or the current directory); choose another output")
    for given in inputs:
        if _same_file(path, given):
            alias = "" if Path(os.path.abspath(given)) == path else " (the same file under another name: a link)"
            raise OutputExists(f"{shown}: refusing to replace this output {what}: it is the input {given}{alias}; "
                               "choose another output")
    return path


def _same_file(path: Path, other: str | Path) -> bool:
    """Whether ``path`` and ``other`` are one file (a ``file://`` URL as its local path; False for
    another URL or a missing file)."""
    if isinstance(other, str) and other[:7].lower() == "file://":
        from urllib.parse import unquote, urlsplit

        other = unquote(urlsplit(other).path)
    try:
        return os.path.samefile(path, other)
    except (OSError, ValueError):
        return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def output_dir(path: str | Path, *, overwrite: bool = False, inputs: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``path`` to write into; rename it to ``path``
    when the block ends without an exception, delete it otherwise.

    With ``overwrite`` an existing ``path`` is replaced as a whole at the end (moved aside,
    the new directory renamed into place, the old one deleted); without it an existing
    ``path`` is refused before the block runs (see :func:`check_new_output`).
    """
    inputs = tuple(inputs)
    final = check_new_output(path, overwrite=overwrite, inputs=inputs)
    final.parent.mkdir(parents=True, exist_ok=True)
    staged = _temp_sibling(final, "tmp")
    _remove(staged)  # left over by a crashed process that had the same pid
    staged.mkdir()
    old = None
    try:
        yield staged
        if final.exists() or final.is_symlink():
            check_new_output(final, overwrite=overwrite, inputs=inputs)  # it may have appeared meanwhile
            old = _temp_sibling(final, "old")
            _remove(old)
            os.replace(final, old)
        try:
            os.replace(staged, final)
        except BaseException:
            if old is not None:
                os.replace(old, final)
                old = None
            raise
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    if old is not None:
        _remove(old)


@contextmanager
def output_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` (same suffix, so writers that go by the
    suffix still work) and move it to ``path`` with :func:`os.replace` when the block
    ends without an exception; delete it otherwise.  An error writing it names ``path``, not the
    temporary name (an :class:`OutputError`)."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    staged = final.with_name(f".{final.stem}.tmp-{os.getpid()}{final.suffix}")
    try:
        yield staged
        os.replace(staged, final)
    except OSError as exc:
        text = str(exc)
        if str(staged) not in text and exc.filename not in (str(staged), staged):
            raise
        text = text.replace(str(staged), str(final)) if str(staged) in text else (exc.strerror or text)
        raise OutputError(f"{final}: cannot write: {text}") from None
    finally:
        if staged.exists():
            staged.unlink()


class OutputError(NA64Error, OSError):
    """An output file that cannot be written (named as the caller asked for it)."""


def write_new_file(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path``, which must not exist, all at once: a temporary sibling is
    written and then hard-linked to ``path`` (atomic, and fails if ``path`` appeared)."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(errno.EEXIST, "file exists", str(path))
    staged = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        staged.write_text(text)
        try:
            os.link(staged, path)
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links: check-then-rename
            if path.exists():
                raise FileExistsError(errno.EEXIST, "file exists", str(path)) from None
            os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)
    return path

