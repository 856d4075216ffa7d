"""Validated access to YAML configuration (setups, conditions, tags, selections).

:class:`Node` wraps a mapping read from a file and remembers where it came from, so
that every error names the file, the key path and what was allowed::

    node = load_yaml(path, schema_version=1)
    energy = node.quantity("beam.energy", "energy")      # float, hepunits
    n = node.integer("cells.0", minimum=1)

All accessors raise :class:`~na64reco.errors.ConfigError`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from numbers import Integral
from pathlib import Path
from typing import Any

import yaml

from na64reco import as_loaded
from na64reco.errors import ConfigError
from na64reco.units import parse_quantity

_MISSING = object()


#: a name that becomes a file or directory name (a calibration tag, a dataset): letters, digits and
#: ``_ . + -``, not starting with a dot (no path separator, no ``..``, no hidden or empty name), at most
#: :data:`PLAIN_NAME_MAX` characters (file systems allow 255 bytes, and outputs add to it)
PLAIN_NAME = re.compile(r"[A-Za-z0-9_+\-][A-Za-z0-9_.+\-]*")
PLAIN_NAME_MAX = 128
PLAIN_NAME_RULE = (f"letters, digits and '_ . + -', not starting with a dot, 1-{PLAIN_NAME_MAX} characters")


def is_plain_name(value) -> bool:
    """Whether ``value`` is a :data:`PLAIN_NAME` string of at most :data:`PLAIN_NAME_MAX` characters."""
    return isinstance(value, str) and len(value) <= PLAIN_NAME_MAX and PLAIN_NAME.fullmatch(value) is not None


def integer_at_least(value, least: int, what: str) -> int:
    """``value`` as an ``int`` if it is an integer (Python's or numpy's, not a bool) of at least
    ``least``, else a :class:`ConfigError` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < least:
        raise ConfigError(f"{what} must be an integer >= {least}, got {value!r}")
    return int(value)


def load_yaml(path: str | Path, *, schema_version: int | Sequence[int] | None = None) -> Node:
    """Read a YAML mapping; check its ``schema_version`` if one is required."""
    return load_yaml_hashed(path, schema_version=schema_version)[0]


def load_yaml_hashed(path: str | Path, *, schema_version: int | Sequence[int] | None = None) -> tuple[Node, str]:
    """(:func:`load_yaml`'s node, the SHA-256 of the bytes it was parsed from: one read)."""
    path = Path(path)
    data, sha256 = read_yaml_hashed(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    node = Node(data, str(path))
    if schema_version is not None:
        allowed = (schema_version,) if isinstance(schema_version, int) else tuple(schema_version)
        version = node.integer("schema_version")
        if version not in allowed:
            raise ConfigError(
                f"{path}: key 'schema_version' is {version}; this version of na64reco reads "
                f"{', '.join(map(str, allowed))}"
            )
    return node, sha256


def read_yaml(path: str | Path) -> Any:
    """The document of a YAML file, whatever its top level (a key given twice is an error);
    a missing, unreadable or malformed file is a one-line :class:`ConfigError` naming the file
    (and the line and column of a syntax error)."""
    return read_yaml_hashed(path)[0]


def read_yaml_hashed(path: str | Path) -> tuple[Any, str]:
    """(:func:`read_yaml`'s document, the SHA-256 of the bytes it was parsed from): what a record
    of the file's use names, with no second read that could see other content."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; expected a YAML file")
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        content = path.read_bytes()
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start}: {exc.reason}); expected YAML") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    # what this process read (a file edited after it was read is not what its loaded objects hold)
    sha256 = hashlib.sha256(content).hexdigest()
    as_loaded.note_read(path, sha256)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        raise ConfigError(f"{path}: malformed YAML{line}: {getattr(exc, 'problem', exc)}") from None
    return data, sha256


class _UniqueKeys:
    """Mixin of a safe loader refusing a key given twice in one mapping (which PyYAML would
    resolve silently to the last value: a second ``cuts`` or dataset dropping the first)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *anchor``: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"key {key!r} is given twice (first on line {first.start_mark.line + 1}); expected each key once",
                    key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


class _UniqueKeyLoader(_UniqueKeys, getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """``yaml.safe_load`` refusing a key given twice; libyaml's parser where PyYAML has it (the
    same documents and error positions, ~6x faster: the na64mu setup 53 -> 9 ms, parsed by every
    run's processor), else PyYAML's own."""


class Node:
    """A mapping from a configuration file, with the key path used in messages."""

    def __init__(self, data: dict[str, Any], source: str, path: str = "") -> None:
        self.data = data
        self.source = source
        self.path = path

    # -- navigation ------------------------------------------------------------------
    def _where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: key '{self._where(key)}': {message}")

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        node, _, rest = key.partition(".")
        if node not in self.data:
            if default is not _MISSING:
                return default
            known = ", ".join(map(str, self.data)) or "none"
            raise self.error(node, f"missing (keys here: {known})")
        value = self.data[node]
        if rest:
            if isinstance(value, list):
                idx, _, rest2 = rest.partition(".")
                if not idx.isdigit() or int(idx) >= len(value):
                    raise self.error(f"{node}.{idx}", f"no item {idx} in a list of {len(value)}")
                value = value[int(idx)]
                if rest2:
                    if not isinstance(value, dict):
                        raise self.error(f"{node}.{idx}", "expected a mapping")
                    return Node(value, self.source, self._where(f"{node}.{idx}")).raw(rest2, default)
                return value
            if not isinstance(value, dict):
                raise self.error(node, f"expected a mapping, found {value!r}")
            return Node(value, self.source, self._where(node)).raw(rest, default)
        return value

    def has(self, key: str) -> bool:
        return self.raw(key, None) is not None

    def check_keys(self, allowed) -> None:
        """A ConfigError naming the first key not in ``allowed``: a misspelled optional key would
        otherwise be silently ignored, its default in force."""
        for key in self.data:
            if key not in allowed:
                raise self.error(str(key), f"unknown key; allowed keys: {', '.join(sorted(allowed))}")

    def node(self, key: str) -> Node:
        value = self.raw(key)
        if not isinstance(value, dict):
            raise self.error(key, f"expected a mapping, found {type(value).__name__}")
        return Node(value, self.source, self._where(key))

    def items(self) -> Iterator[tuple[str, Node]]:
        for key in self.data:
            yield str(key), self.node(str(key))

    def nodes(self, key: str) -> list[Node]:
        value = self.raw(key)
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(key, "expected a list of mappings")
        return [Node(v, self.source, self._where(f"{key}.{i}")) for i, v in enumerate(value)]

    # -- typed values ------------------------------------------------------------------
    def quantity(self, key: str, dimension: str, default: Any = _MISSING, *,
                 minimum: float | None = None, maximum: float | None = None) -> float:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        try:
            q = parse_quantity(value, dimension)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None
        return self._check_range(key, q, minimum, maximum, value)

    def number(self, key: str, default: Any = _MISSING, *, minimum: float | None = None,
               maximum: float | None = None) -> float:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"expected a number, found {value!r}")
        return self._check_range(key, self._float(key, value), minimum, maximum, value)

    def integer(self, key: str, default: Any = _MISSING, *, minimum: int | None = None,
                maximum: int | None = None) -> int:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, found {value!r}")
        return int(self._check_range(key, value, minimum, maximum, value))

    def string(self, key: str, default: Any = _MISSING, *, choices: Sequence[str] | None = None) -> str:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, found {value!r}")
        if choices is not None and value not in choices:
            raise self.error(key, f"{value!r} is not one of: {', '.join(choices)}")
        return value

    def numbers(self, key: str, length: int | None = None, *, minimum: float | None = None,
                maximum: float | None = None) -> list[float]:
        value = self.raw(key)
        if not isinstance(value, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            raise self.error(key, "expected a list of numbers")
        if length is not None and len(value) != length:
            raise self.error(key, f"expected {length} values, found {len(value)}")
        for i, v in enumerate(value):
            self._check_range(f"{key}.{i}", self._float(f"{key}.{i}", v), minimum, maximum, v)
        return [float(v) for v in value]

    def _float(self, key, value) -> float:
        try:
            return float(value)
        except OverflowError:  # (a YAML integer beyond a float's range)
            raise self.error(key, f"{str(value)[:12]}... is beyond a float's range; expected a finite value") from None

    def _check_range(self, key, q, minimum, maximum, shown):
        if q != q:  # NaN
            raise self.error(key, "is NaN")
        if q in (float("inf"), float("-inf")):  # (no configured value is infinite: a typo or an overflow)
            raise self.error(key, f"{shown!r} is infinite; expected a finite value")
        if minimum is not None and q < minimum:
            raise self.error(key, f"{shown!r} is below the allowed minimum {minimum}")
        if maximum is not None and q > maximum:
            raise self.error(key, f"{shown!r} is above the allowed maximum {maximum}")
        return q
