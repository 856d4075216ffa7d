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
"""

from __future__ import annotations

import hashlib
import io
import pickle
import weakref

_MADE: dict[int, tuple[weakref.ref, bytes]] = {}


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
