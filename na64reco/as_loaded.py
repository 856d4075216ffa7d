"""Whether an object the loaders made is still as they made it.

:func:`~na64reco.geometry.load_setup` and :func:`~na64reco.conditions.load_conditions` return
objects that a process shares (the setup is cached, a processor caches its conditions), and
their dictionaries and arrays can be edited in place (``setup.magnets["MS2"] = ...``,
``conditions.calo["ECAL"].gain[:] *= 3``).  The blinding compares the inputs of a
reconstruction with the reference ones by their *files*; an object edited after it was read
from them must not pass for them.  The loaders :func:`remember` what they made (a SHA-256 of
its pickle without private attributes: ~0.1 ms for a setup, ~0.2 ms for a run's conditions);
:func:`unchanged` says whether it is still the same, and False for an object no loader made
(e.g. ``dataclasses.replace`` of one).  What it does not see: edits of the private caches
(``_...`` attributes), which are made from the rest when first used (docs/unblinding.md).

The loaders and the reconstruction's caches hold what a file said when it was read (keyed by
its path), so a file edited after it was read is not what those objects hold: the YAML reader
notes the content of every file it reads (:func:`note_read`), and :func:`read_once` says
whether a file had one content in every read of this process, that of its bytes now.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import weakref

_MADE: dict[int, tuple[weakref.ref, bytes]] = {}
#: file path -> SHA-256 of its bytes when first read in this process (:func:`note_read`)
_READ: dict[str, str] = {}
#: files read with two different contents in this process
_REREAD: set[str] = set()


class _ContentPickler(pickle.Pickler):
    """Pickles the package's objects without their private attributes (``_...``: their own
    caches, e.g. the scoped views of a :class:`~na64reco.conditions.RunConditions` or a
    detector's kernel arguments, made from the rest when first used).  Never unpickled."""

    def reducer_override(self, obj):
        state = getattr(obj, "__dict__", None)
        if state is None or not type(obj).__module__.startswith("na64reco"):
            return NotImplemented
        return _content, (type(obj).__qualname__, {k: v for k, v in state.items() if not k.startswith("_")})


def _content(name, state):  # (the reducer's callable: a digest is never unpickled)
    raise TypeError("a content digest is not unpickled")


def _digest(obj) -> bytes:
    buffer = io.BytesIO()
    _ContentPickler(buffer, protocol=5).dump(obj)
    return hashlib.sha256(buffer.getbuffer()).digest()


def remember(obj):
    """Note ``obj`` as its loader made it; returns ``obj``."""
    key = id(obj)

    def forget(ref, key=key):
        if _MADE.get(key, (None,))[0] is ref:  # (not an entry of a later object at the same address)
            del _MADE[key]

    _MADE[key] = (weakref.ref(obj, forget), _digest(obj))
    return obj


def unchanged(obj) -> bool:
    """True if a loader made ``obj`` (:func:`remember`) and its content is still what it made."""
    entry = _MADE.get(id(obj))
    return entry is not None and entry[0]() is obj and _digest(obj) == entry[1]


def note_read(path, sha256: str) -> None:
    """Note that a loader read the file ``path`` with content ``sha256`` (hex digest of its bytes)."""
    key = str(path)
    if _READ.setdefault(key, sha256) != sha256:
        _REREAD.add(key)


def changed_since_read(path, sha256: str) -> bool:
    """True if this process read ``path`` (:func:`note_read`) with another content than ``sha256``
    (its bytes now), or with two contents: what was loaded or cached from it is not the file.
    False for a file it never read (nothing of it is held)."""
    key = str(path)
    return key in _REREAD or _READ.get(key, sha256) != sha256


def read_once(path, sha256: str) -> bool:
    """True if every read of ``path`` in this process (:func:`note_read`) gave the content ``sha256``
    (its bytes now): an object made from it, and whatever was cached under its path, is that file."""
    return str(path) in _READ and not changed_since_read(path, sha256)
