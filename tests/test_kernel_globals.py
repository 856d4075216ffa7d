"""No compiled kernel reads a constant of another module as a global.

numba freezes the globals a kernel reads into its compiled code, and its on-disk cache is keyed
on the kernel's own file: after an edit of ``material.py`` (Highland's 13.6 MeV and 0.038) the
simulation kept the old values until ``sim/tracks.py`` changed (stop 47's review of the tests,
by mutation).  Such constants reach the kernels as arguments, read when they are called.
"""

from __future__ import annotations

import importlib
import pkgutil
import types

from numba.core.registry import CPUDispatcher

import na64reco

CONSTANT_MODULES = ("na64reco.constants", "na64reco.material", "na64reco.units", "na64reco.pulse")


def _names(code: types.CodeType) -> set[str]:
    out = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            out |= _names(c)
    return out


def test_kernels_take_other_modules_constants_as_arguments():
    modules = [importlib.import_module(m.name) for m in pkgutil.walk_packages(na64reco.__path__, "na64reco.")]
    constants = [importlib.import_module(m) for m in CONSTANT_MODULES]
    found = []
    for mod in modules:
        for name, obj in list(vars(mod).items()):
            if not (isinstance(obj, CPUDispatcher) and obj.py_func.__module__ == mod.__name__):
                continue
            g = obj.py_func.__globals__
            for n in _names(obj.py_func.__code__):
                v = g.get(n)
                if isinstance(v, types.ModuleType) and v.__name__.startswith("na64reco") and v is not mod:
                    found.append(f"{mod.__name__}.{name} reads module {v.__name__} ({n})")
                elif isinstance(v, (int, float)) and not isinstance(v, bool):
                    found += [f"{mod.__name__}.{name} reads {c.__name__}.{n}" for c in constants
                              if c is not mod and vars(c).get(n) is v]
    assert not found, found
