"""The document of a setup file (``calib/setups/<name>.yaml``): its own keys over its base's.

A setup file may describe a variant of another setup: the top-level key ``base`` names that
file (relative to the variant's folder), whose document (itself possibly a variant) is taken
whole; ``drop`` lists the dotted keys of the base the variant does not have (a magnet, a
detector, the base's run periods), removed first; the variant's own keys are then merged in,
mappings key by key (recursively; the variant's keys first, in its order), any other value
(a number, a string, a list such as ``trackers.planes``) replacing the base's.  So one
description holds what two setups share (NA64e's calorimeters, read-out and simulation
models are NA64mu's but for their positions and a few values) and the variant lists only what
differs: a shared value is written once.

Every reader of a setup file (:mod:`na64reco.geometry`, the simulator's parameters, the
waveform configuration, the calibrations) reads :func:`setup_document`; what a record of the
file's use names, and what the blinding compares with the reference, is
:func:`setup_sha256`, the content of the file *and its bases*.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from na64reco.config import Node, load_yaml, read_yaml_hashed
from na64reco.errors import ConfigError

SCHEMA_VERSION = 1
#: the keys that make a file a variant (not part of its document)
VARIANT_KEYS = ("base", "drop")


def setup_sources(path) -> tuple[Path, ...]:
    """The setup file ``path`` and its bases, the file first (a ConfigError for a base that is
    missing or a chain of bases that comes back to a file)."""
    out = [Path(path)]
    while True:
        base = _base_of(out[-1])
        if base is None:
            return tuple(out)
        if base.resolve() in {p.resolve() for p in out}:
            raise ConfigError(f"{out[-1]}: key 'base': {base.name} is the file itself or one of its variants "
                              f"({' -> '.join(p.name for p in out)} -> {base.name})")
        out.append(base)


def _base_of(path: Path) -> Path | None:
    """The base file ``path`` names (None without one), parsed once per version of the file."""
    try:
        st = os.stat(path)
    except OSError:
        return _base_named(str(path), -1, -1)  # (load_yaml's error names the file)
    return _base_named(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=32)
def _base_named(path: str, mtime_ns: int, size: int) -> Path | None:
    base = load_yaml(path).data.get("base")
    if base is None:
        return None
    if not isinstance(base, str) or not base.endswith((".yaml", ".yml")) or "/" in base:
        raise ConfigError(f"{path}: key 'base': expected the file name of another setup in the same "
                          f"folder (*.yaml), found {base!r}")
    out = Path(path).parent / base
    if not out.is_file():
        raise ConfigError(f"{path}: key 'base': {out} does not exist")
    return out


def setup_document(path) -> Node:
    """The document of the setup file ``path`` with its bases applied (module doc), its
    ``schema_version`` checked; errors name the file and the key."""
    path = Path(path)
    node = load_yaml(path, schema_version=SCHEMA_VERSION)
    if "base" not in node.data:
        if "drop" in node.data:
            raise ConfigError(f"{path}: key 'drop': only a setup with a 'base' can drop keys")
        return node
    base = setup_document(setup_sources(path)[1]).data
    drop = node.data.get("drop", [])
    if not isinstance(drop, list) or not all(isinstance(d, str) for d in drop):
        raise ConfigError(f"{path}: key 'drop': expected a list of dotted keys of the base, found {drop!r}")
    data = _without(base, drop, path)
    own = {k: v for k, v in node.data.items() if k not in VARIANT_KEYS}
    root = load_yaml(setup_sources(path)[-1]).data  # the first base, whole: what the chain's variants only drop
    for section in UNLISTED_SECTIONS:
        refuse_new_keys(root.get(section), own.get(section), section, path)
    return Node(_over(data, own), str(path))


#: The sections whose keys have no list of their own (read by several modules: the simulator's
#: parameters, the calibrations; a period cannot override them): a variant may set there only keys
#: the first base of its chain has (dropped ones included: a variant may set again what its base drops).
UNLISTED_SECTIONS = ("simulation", "calibration")


def refuse_new_keys(root, own, where: str, source) -> None:
    """A ConfigError for a key of ``own`` (a variant's part of an unlisted section) that the same mapping of
    ``root`` (the chain's first base, before any drop) does not have: a misspelling the readers would never
    read ('default_couplng', 'electorn'), the base's value staying in force."""
    if not (isinstance(root, dict) and isinstance(own, dict)):
        return
    for k, v in own.items():
        key = f"{where}.{k}"
        if k not in root:
            raise ConfigError(f"{source}: key '{key}': not a key of the base description, which has {where} keys "
                              f"{', '.join(str(x) for x in root)}; a misspelling would be silently ignored")
        refuse_new_keys(root[k], v, key, source)


def setup_sha256(path) -> str:
    """SHA-256 of what the document of ``path`` is read from: the file's own for a setup without
    a base, else of the list of its files' names and SHA-256s (a base edited changes it)."""
    sources = setup_sources(path)
    if len(sources) == 1:
        return read_yaml_hashed(sources[0])[1]
    lines = "".join(f"{p.name} {read_yaml_hashed(p)[1]}\n" for p in sources)
    return hashlib.sha256(lines.encode()).hexdigest()


def _without(base: dict, drop: list[str], path: Path) -> dict:
    """``base`` without the dotted keys ``drop`` (new mappings along each path; the rest shared)."""
    out = dict(base)
    for dotted in drop:
        *parents, last = dotted.split(".")
        node = out
        for k in parents:
            if not isinstance(node.get(k), dict):
                raise ConfigError(f"{path}: key 'drop': {dotted!r} is not a key of the base")
            node[k] = node = dict(node[k])
        if last not in node:
            raise ConfigError(f"{path}: key 'drop': {dotted!r} is not a key of the base")
        del node[last]
    return out


def _over(base, own):
    """``own`` merged over ``base``: mappings key by key (the variant's keys in its order, then the
    base's others: a mapping whose order counts, such as the detectors, is listed in the variant's
    order), any other value replacing the base's."""
    if not (isinstance(base, dict) and isinstance(own, dict)):
        return own
    out = {k: _over(base[k], v) if k in base else v for k, v in own.items()}
    out.update((k, v) for k, v in base.items() if k not in own)
    return out
