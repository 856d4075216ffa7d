"""Where an input file lives: a local path or a URL (``root://``, ``https://``, ``s3://``, ...).

Every place that takes an input file goes through this module for what it needs besides
the ROOT content (which uproot reads through fsspec either way):

* :func:`is_url` -- a URL is kept exactly as given (``pathlib.Path`` would fold the
  ``//`` of ``root://host//eos/...`` and ``http://host/...``);
* :func:`file_info` -- size and a version stamp (local: modification time in ns; remote:
  ETag, else Last-Modified, else the server's modification time), with one clear
  :class:`~na64reco.errors.RawFormatError` naming the path or URL if it is missing;
* :func:`open_bytes` -- the raw bytes (hashing);
* :func:`display_name`, :func:`resolve`, :func:`join` -- names for humans, absolute
  names for ledgers, relative entries of a fileset YAML;
* :func:`uproot_source` -- what to hand to ``uproot.open``.

Remote protocols need their fsspec implementation: ``http(s)://`` uses aiohttp (a
dependency of na64reco), ``root://`` the ``xrootd`` extra (fsspec-xrootd) and ``s3://``
the ``s3`` extra (s3fs).  Credentials come from the environment as those packages read
it (X.509 proxy or Kerberos ticket for XRootD, ``AWS_*`` variables for S3), see
``docs/running.md``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from na64reco.errors import RawFormatError, RemoteFileUnavailable

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+://")
#: Optional extra that provides each remote protocol (for the error message when it is missing).
EXTRAS = {"root": "xrootd", "s3": "s3", "http": None, "https": None}


@dataclass(frozen=True)
class FileInfo:
    """What :func:`file_info` knows of a file without reading its content."""

    size: int        # bytes
    version: str     # changes when the file is rewritten (local: mtime, ctime, inode, size; ETag or Last-Modified)


def is_url(path) -> bool:
    """``True`` for ``scheme://...`` strings (a one-letter scheme is a Windows drive)."""
    return isinstance(path, str) and bool(_URL.match(path))


def scheme(path) -> str:
    return urlsplit(path).scheme.lower() if is_url(path) else ""


def location(path) -> str:
    """The canonical text of a file's location: URLs as given, local paths as ``str``."""
    return path if is_url(path) else str(os.fspath(path))


def display_name(path) -> str:
    """The file's base name (for progress bars and titles)."""
    if is_url(path):
        return urlsplit(path).path.rstrip("/").rsplit("/", 1)[-1] or path
    return Path(path).name


def resolve(path) -> str:
    """Absolute location: URLs as given, local paths resolved."""
    return path if is_url(path) else str(Path(path).resolve())


def join(base_dir, entry: str) -> str:
    """``entry`` of a file list kept next to ``base_dir``: URLs and absolute paths as they are."""
    if is_url(entry) or Path(entry).is_absolute():
        return entry
    return str(Path(base_dir) / entry)


def uproot_source(path):
    """What to give ``uproot.open``: a ``Path`` for local files (no ``file:object`` colon
    parsing), the URL string for remote ones."""
    return path if is_url(path) else Path(path)


def _filesystem(url: str):
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        extra = EXTRAS.get(scheme(url))
        hint = f" (install na64reco[{extra}])" if extra else ""
        raise RawFormatError(f"{url}: cannot read {scheme(url)}:// URLs: {exc}{hint}") from None


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from, outermost first."""
    causes: list[BaseException] = []
    while exc is not None and exc not in causes:
        causes.append(exc)
        exc = exc.__cause__ or exc.__context__
    return causes


def _remote_error(url: str, exc: BaseException) -> RawFormatError:
    """One line for a failed look-up of ``url``: not found, or the underlying reason."""
    causes = _causes(exc)
    status = next((getattr(c, "status", None) for c in causes if getattr(c, "status", None)), None)
    if status == 404 or (isinstance(exc, FileNotFoundError) and len(causes) == 1):
        return RawFormatError(f"{url}: file not found")
    if status in (401, 403) or any(isinstance(c, PermissionError) for c in causes):
        return RawFormatError(f"{url}: permission denied (credentials: see docs/running.md)")
    inner = causes[-1]
    text = " ".join(str(inner).split()) or type(inner).__name__
    return connection_failure(url, exc) or RawFormatError(
        f"{url}: file not found or not readable ({type(inner).__name__}: {text})")


def connection_failure(path, exc: BaseException) -> RemoteFileUnavailable | None:
    """The error to raise when reading the URL ``path`` failed because its connection did
    (refused, dropped, timed out); None for a local path or another kind of failure."""
    if not is_url(path):
        return None
    causes = _causes(exc)
    if not any(isinstance(c, (ConnectionError, TimeoutError)) or _is_connection_error(c) for c in causes):
        return None
    inner = causes[-1]
    text = " ".join(str(inner).split()) or type(inner).__name__
    return RemoteFileUnavailable(f"{path}: not reachable ({type(inner).__name__}: {text})")


def _is_connection_error(exc: BaseException) -> bool:
    """A lost or refused connection of the HTTP client (aiohttp) that fsspec uses."""
    return type(exc).__module__.startswith("aiohttp") and any(
        cls.__name__ in ("ClientConnectionError", "ClientPayloadError") for cls in type(exc).__mro__)


def file_info(path) -> FileInfo:
    """Size and version of a local or remote file.

    Raises :class:`~na64reco.errors.RawFormatError` (``<path>: file not found``) if it is
    not there, :class:`~na64reco.errors.RemoteFileUnavailable` (a transient error) for a
    URL whose server cannot be reached.
    """
    if not is_url(path):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise RawFormatError(f"{path}: file not found") from None
        except OSError as exc:
            raise RawFormatError(f"{path}: {exc.strerror or exc}") from None
        if not Path(path).is_file():
            raise RawFormatError(f"{path}: not a file")
        return FileInfo(st.st_size, _local_version(st))
    fs, fs_path = _filesystem(path)
    try:
        info = fs.info(fs_path)
    except Exception as exc:  # fsspec back-ends raise their own types (aiohttp, XRootD, botocore)
        raise _remote_error(path, exc) from None
    if info.get("type", "file") not in ("file", None):
        raise RawFormatError(f"{path}: not a file ({info.get('type')})")
    size = info.get("size")
    if size is None:
        raise RawFormatError(f"{path}: the server does not tell the file's size (no Content-Length)")
    version = next((str(info[k]) for k in ("ETag", "etag", "Last-Modified", "LastModified", "mtime",
                                           "modified", "last_modified") if info.get(k)), "")
    return FileInfo(int(size), version)


def _local_version(st: os.stat_result) -> str:
    """The version of a local file: its modification and change times, inode and size.  The
    mtime alone can be set back (``os.utime``) after the content was replaced, and a cache keyed
    on it took a data file copied over a simulated one for the simulation (blinding review, stop
    48); the change time cannot be set by a user, and a replacing rename gives another inode.
    No device number: a shared file system may number its device differently on each node."""
    return f"{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_size}"


def file_version(path) -> str:
    """:attr:`FileInfo.version` (cheap for local files: one ``stat``)."""
    if not is_url(path):
        return _local_version(os.stat(path))
    return file_info(path).version


def open_bytes(path):
    """The file's content as a binary file object (a context manager)."""
    if not is_url(path):
        return open(path, "rb")
    fs, fs_path = _filesystem(path)
    try:
        return fs.open(fs_path, "rb")
    except Exception as exc:
        raise _remote_error(path, exc) from None


def sha256_file(path) -> str:
    """SHA-256 of a file's content (hex), read in 1 MiB blocks; ``path`` may be a URL."""
    import hashlib

    h = hashlib.sha256()
    with open_bytes(path) as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()
