"""No cached kernel depends on another file that its on-disk cache does not know of.

numba freezes into a kernel's compiled code the globals it reads and the compiled functions it
calls, and keys its on-disk cache on the kernel's own file: after an edit of ``material.py``
(Highland's 13.6 MeV and 0.038) the simulation kept the old values until ``sim/tracks.py``
changed; an edit of ``waveform.py``'s flag bits or of ``apv.py``'s strip time would have been
ignored the same way by the calorimeter loop and the hits' times (stop 47's reviews of the tests).
A kernel that needs another module's constant takes it as an argument, read when it is called, or
is cached with :func:`na64reco.reco.tracking._jit.njit_cached_with` keyed on that module too.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import types
from pathlib import Path

from numba.core.registry import CPUDispatcher

import na64reco


def _names(code: types.CodeType) -> set[str]:
    out = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            out |= _names(c)
    return out


def _own_names(module) -> set[str]:
    """The names a module binds at its top level itself (assignments, definitions), not by import."""
    tree = ast.parse(Path(module.__file__).read_text())
    out = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
        for t in targets:
            out |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out.add(node.name)
    return out


def _dependencies(modules):
    """{kernel: [(what, module it comes from)]} for the cached kernels of ``modules``: the compiled
    functions of other modules they call, the na64reco modules they read attributes of, the numbers
    they read that another na64reco module defines."""
    by_name = {m.__name__: m for m in modules}
    own = {name: _own_names(m) for name, m in by_name.items()}
    out = {}
    for mod in modules:
        for name, obj in list(vars(mod).items()):
            if not (isinstance(obj, CPUDispatcher) and obj.py_func.__module__ == mod.__name__
                    and type(obj._cache).__name__ != "NullCache"):  # (cached on disk)
                continue
            deps = []
            g = obj.py_func.__globals__
            for n in _names(obj.py_func.__code__):
                v = g.get(n)
                if isinstance(v, CPUDispatcher) and v.py_func.__module__ != mod.__name__:
                    deps.append((n, v.py_func.__module__))
                elif isinstance(v, types.ModuleType) and v.__name__.startswith("na64reco") and v is not mod:
                    deps.append((n, v.__name__))
                elif isinstance(v, (int, float)) and not isinstance(v, bool) and n not in own[mod.__name__]:
                    deps += [(n, other) for other, names in own.items()
                             if other != mod.__name__ and n in names and vars(by_name[other]).get(n) is v]
            if deps:
                out[f"{mod.__name__}.{name}"] = (obj, deps)
    return out


def _callees(obj) -> list:
    """The compiled functions of its own module that a kernel calls (compiled into it)."""
    g = obj.py_func.__globals__
    return [g[n] for n in _names(obj.py_func.__code__)
            if isinstance(g.get(n), CPUDispatcher) and g[n].py_func.__module__ == obj.py_func.__module__
            and g[n] is not obj]


def test_cached_kernels_are_keyed_on_every_file_they_compile_in():
    modules = [importlib.import_module(m.name) for m in pkgutil.walk_packages(na64reco.__path__, "na64reco.")]
    deps = _dependencies(modules)
    # a kernel compiles in its own module's kernels and with them what they read: their dependencies too
    kernels = {f"{m.__name__}.{n}": o for m in modules for n, o in vars(m).items()
               if isinstance(o, CPUDispatcher) and o.py_func.__module__ == m.__name__
               and type(o._cache).__name__ != "NullCache"}
    name_of = {id(o): k for k, o in kernels.items()}
    for key, obj in kernels.items():
        seen, todo, found = {id(obj)}, list(_callees(obj)), list(deps.get(key, (obj, []))[1])
        while todo:
            callee = todo.pop()
            if id(callee) in seen:
                continue
            seen.add(id(callee))
            found += deps.get(name_of.get(id(callee), ""), (None, []))[1]
            todo += _callees(callee)
        if found:
            deps[key] = (obj, found)
    unkeyed = {k: [d for d in ds if d[1] not in getattr(obj, "keyed_on", ())] for k, (obj, ds) in deps.items()}
    assert not {k: v for k, v in unkeyed.items() if v}, unkeyed
    assert "na64reco.reco.calo._event_loop" in deps  # (the scan sees what it is for: FLAG_* of waveform.py)
