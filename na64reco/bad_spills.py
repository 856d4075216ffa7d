"""The bad-spill list: spills that the run quality (``na64reco dqm``) excluded.

Written by :func:`na64reco.dqm.write_bad_spills`, read by :func:`load_bad_spills` for
``na64reco run --bad-spills`` and frozen with an analysis (``na64reco freeze
--bad-spills``), so the unblinded run drops the same spills as the blinded one.
"""

from __future__ import annotations

from pathlib import Path

from na64reco.config import read_yaml_hashed
from na64reco.errors import ConfigError

BAD_SPILLS_SCHEMA_VERSION = 1
#: what a bad-spill list is, for the messages
BAD_SPILL_LIST = ("a bad-spill list (YAML or JSON: schema_version, spills: [{run, spill, reasons}]; "
                  "`na64reco dqm` writes it)")


class BadSpillsError(ConfigError):
    """A bad-spill list that cannot be read."""


def load_bad_spills(path) -> dict[tuple[int, int], list[str]]:
    """``{(run, spill): reasons}`` of a bad-spill list written by :func:`write_bad_spills`
    (YAML or JSON with the same keys)."""
    return load_bad_spills_hashed(path)[0]


def bad_spills_judged(path) -> bool:
    """False if the list says ``judged: false`` (``na64reco dqm`` of too few spills to judge any); a
    list without the key (written by hand, or before it existed) is taken as judged."""
    data, _ = read_yaml_hashed(Path(path))
    return not (isinstance(data, dict) and data.get("judged") is False)


def load_bad_spills_hashed(path) -> tuple[dict[tuple[int, int], list[str]], str]:
    """(:func:`load_bad_spills`, the SHA-256 of the bytes read): what a run records of the list
    it applied (``Provenance.bad_spills_sha256``), from the one read it parsed."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        raise BadSpillsError(f"{path}: bad-spill list not found")
    try:
        data, sha256 = read_yaml_hashed(path)  # one line naming the file (and the line and column of a syntax error)
    except ConfigError as exc:
        raise BadSpillsError(f"{exc}; the file should be {BAD_SPILL_LIST}") from None
    if not isinstance(data, dict) or data.get("schema_version") != BAD_SPILLS_SCHEMA_VERSION:
        found = data.get("schema_version") if isinstance(data, dict) else type(data).__name__
        raise BadSpillsError(f"{path}: key 'schema_version' is {found!r}; expected {BAD_SPILLS_SCHEMA_VERSION} "
                             "(a list written by `na64reco dqm`)")
    spills = data.get("spills")
    if not isinstance(spills, list):
        raise BadSpillsError(f"{path}: key 'spills' must be a list of {{run, spill, reasons}}")
    out = {}
    for i, s in enumerate(spills):
        if not isinstance(s, dict) or not all(isinstance(s.get(k), int) and not isinstance(s.get(k), bool)
                                              for k in ("run", "spill")):
            raise BadSpillsError(f"{path}: spills[{i}] needs integer 'run' and 'spill', got {s!r}")
        reasons = out.setdefault((s["run"], s["spill"]), [])  # (a spill listed twice keeps both entries' reasons)
        reasons += [str(r) for r in s.get("reasons") or [] if str(r) not in reasons]
    return out, sha256
