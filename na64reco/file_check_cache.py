"""What the check of each input file found (:mod:`na64reco.file_check`), kept between runs.

Running again over the same files (after a calibration, selection or code change) would
check every file again: ~25 ms of the ~70 ms that a small file costs a run
(docs/performance.md, "Per-file overhead").  The runner keeps each good file's
:class:`~na64reco.file_check.CheckedFile` in one SQLite file and takes it back instead of
opening the file when the file is the same one, unchanged: the same device, inode, size,
modification and status-change times (one ``stat``, as git and make tell a changed file),
checked for the same setup by the same check (:func:`check_code_digest`).

* Only local files that passed the check are kept: a bad file is checked, and its error
  reported, every time; a URL is always checked.
* Writing to a file moves its status-change time, which no program can set back: a file
  rewritten, copied over, truncated or touched is checked again.  A file changed less
  than :data:`RACY_SECONDS` before its check is not kept (it could change again within
  the same tick of the file system's clock; git's "racily clean" entries).
* A bit flipped on the disk without a write is not seen here.  It is seen where each
  chunk is read, against the checksum blocks of the file's first check (kept with its
  record), as a flip after the check of a run is.
* The cache never stops a run: a cache that cannot be opened, read or written (a
  read-only home, a locked or corrupt file) is reported once as a warning, and the run
  checks every file.
* A record is read back with only the classes a record holds (numpy arrays and the
  check's records): a cache file from elsewhere cannot run code.
* The unblinding run (:mod:`na64reco.unblinding`) checks every file: the run on the
  record does not lean on an earlier one.

Where: ``$NA64RECO_CACHE_DIR``, else ``$XDG_CACHE_HOME/na64reco``, else
``~/.cache/na64reco``; ``na64reco run --no-check-cache`` (``RunOptions(check_cache=False)``)
does without.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import sqlite3
import time
import warnings
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import replace
from functools import cache
from pathlib import Path

from na64reco.file_check import CheckedFile
from na64reco.io import location

FILENAME = "file_checks.sqlite"
#: a file changed less than this before its check is not kept (see the module doc)
RACY_SECONDS = 2.0
#: modules whose code makes a check's record: a change to any of them empties the cache
CHECK_MODULES = ("na64reco.file_check", "na64reco.io.raw", "na64reco.io.distinct", "na64reco.io.checksum",
                 "na64reco.io.location", "na64reco.io.baskets")
#: a record kept longer than this is dropped when records are next stored (files deleted or moved
#: leave theirs behind; a file still in use is checked once more and kept again)
KEEP_DAYS = 90
#: the layout of the table below (``PRAGMA user_version``): a cache of another layout is emptied
LAYOUT = 2
_TABLE = """CREATE TABLE IF NOT EXISTS checks (
    path TEXT NOT NULL, setup TEXT NOT NULL, code TEXT NOT NULL, stamp TEXT NOT NULL,
    stored REAL NOT NULL, record BLOB NOT NULL, PRIMARY KEY (path, setup))"""


def default_dir() -> Path:
    """``$NA64RECO_CACHE_DIR``, else ``$XDG_CACHE_HOME/na64reco``, else ``~/.cache/na64reco``."""
    if os.environ.get("NA64RECO_CACHE_DIR"):
        return Path(os.environ["NA64RECO_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "na64reco"


def file_stamp(path) -> tuple[int, int, int, int, int] | None:
    """(device, inode, size, mtime ns, ctime ns) of a local file; None for a URL or a file
    that cannot be stat'ed (it is then checked, and the check reports it)."""
    if location.is_url(path):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@cache
def check_code_digest() -> str:
    """SHA-256 of the source of :data:`CHECK_MODULES` and the library's version: a record is
    taken back only by the check that made it."""
    import importlib

    from na64reco import __version__

    h = hashlib.sha256(__version__.encode())
    for name in CHECK_MODULES:
        src = getattr(importlib.import_module(name), "__file__", None)
        h.update(Path(src).read_bytes() if src and Path(src).is_file() else name.encode())
    return h.hexdigest()


class _RecordUnpickler(pickle.Unpickler):
    """Unpickles a record and nothing else: numpy arrays and dtypes, and the check's classes."""

    _NUMPY = {"_frombuffer", "_reconstruct", "ndarray", "dtype", "scalar"}

    def find_class(self, module, name):
        if module.split(".")[0] == "numpy" and name in self._NUMPY:
            return super().find_class(module, name)
        if (module, name) in {("na64reco.file_check", "CheckedFile"), ("na64reco.io.distinct", "FileIdentity"),
                              ("na64reco.io.checksum", "Blocks"), ("na64reco.io.baskets", "TreeBaskets")}:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a file check record")


def _dumps(rec: CheckedFile) -> bytes:
    return zlib.compress(pickle.dumps(rec, protocol=pickle.HIGHEST_PROTOCOL), 1)  # ~1.3 kB a small file


def _loads(blob: bytes) -> CheckedFile:
    rec = _RecordUnpickler(io.BytesIO(zlib.decompress(blob))).load()
    if not isinstance(rec, CheckedFile) or rec.info is None:
        raise pickle.UnpicklingError(f"not a good file's record: {type(rec).__name__}")
    return rec


class CheckCache:
    """The records of files checked by earlier runs (see the module doc), in
    ``directory/file_checks.sqlite`` (default :func:`default_dir`).

    :meth:`lookup` the run's paths before the check, :meth:`store` what the check found
    after it (the stamps of :meth:`lookup`, taken before the check, go with the records:
    a file changed during the check is checked again next time).  ``hits`` and ``stored``
    count the records taken back and kept."""

    def __init__(self, directory: str | Path | None = None):
        self.path = Path(directory if directory is not None else default_dir()) / FILENAME
        self._db: sqlite3.Connection | None = None
        self._failed = False
        self._stamps: dict[str, tuple] = {}  # path as given -> its stamp at lookup
        self._looked_up_at = 0
        self.hits = self.stored = 0

    def lookup(self, paths: Sequence[str], setup: str) -> dict[str, CheckedFile]:
        """{path: record} of the ``paths`` (as given) checked before for ``setup``, unchanged since."""
        self._looked_up_at = time.time_ns()
        stamps = {str(p): s for p in paths if (s := file_stamp(p)) is not None}
        self._stamps.update(stamps)
        db = self._connect() if stamps else None
        found: dict[str, CheckedFile] = {}
        if db is None:
            return found
        code = check_code_digest()
        try:
            for p, stamp in stamps.items():
                row = db.execute("SELECT code, stamp, record FROM checks WHERE path = ? AND setup = ?",
                                 (location.resolve(p), setup)).fetchone()
                if row is None or row[0] != code or row[1] != _stamp_text(stamp):
                    continue
                try:
                    found[p] = replace(_loads(row[2]), path=p)
                except Exception:  # (an entry that does not read back is as good as none: checked again)
                    continue
        except sqlite3.Error as exc:
            self._fail(exc)
            return {}
        self.hits += len(found)
        return found

    def store(self, records: Iterable[CheckedFile], setup: str) -> None:
        """Keep the good ``records`` of local files that were not changed within
        :data:`RACY_SECONDS` before :meth:`lookup`."""
        racy = self._looked_up_at - int(RACY_SECONDS * 1e9)
        rows = []
        for rec in records:
            stamp = self._stamps.get(rec.path)
            if rec.info is None or stamp is None or max(stamp[3], stamp[4]) > racy:
                continue
            rows.append((location.resolve(rec.path), setup, check_code_digest(), _stamp_text(stamp), time.time(),
                         _dumps(rec)))
        if not rows:
            return
        db = self._connect()
        if db is None:
            return
        try:
            with db:
                db.executemany("INSERT OR REPLACE INTO checks VALUES (?, ?, ?, ?, ?, ?)", rows)
                db.execute("DELETE FROM checks WHERE stored < ?", (time.time() - KEEP_DAYS * 86400,))
        except sqlite3.Error as exc:
            self._fail(exc)
            return
        self.stored += len(rows)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _connect(self) -> sqlite3.Connection | None:
        if self._db is None and not self._failed:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, timeout=10)
                with db:
                    if db.execute("PRAGMA user_version").fetchone()[0] != LAYOUT:  # (an older library's)
                        db.execute("DROP TABLE IF EXISTS checks")
                        db.execute(f"PRAGMA user_version = {LAYOUT}")
                    db.execute(_TABLE)
                self._db = db
            except (OSError, sqlite3.Error) as exc:
                self._fail(exc)
        return self._db

    def _fail(self, exc: BaseException) -> None:
        self._failed = True
        self.close()
        warnings.warn(f"file check cache {self.path}: {type(exc).__name__}: {exc}; every file is checked "
                      f"(delete the file to start afresh, or run with --no-check-cache)", stacklevel=3)


def _stamp_text(stamp: tuple) -> str:
    return " ".join(str(int(v)) for v in stamp)
