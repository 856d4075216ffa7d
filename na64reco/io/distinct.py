"""Input files that hold the same events, refused wherever files are summed: a dataset of
``na64reco run`` (:func:`na64reco.runner.check_files`), the inputs of ``na64reco calibrate``
and of ``na64reco dqm`` (:func:`check_distinct`).  Two files hold the same events when

* they are the same file: the same path (``a.root`` and ``./a.root`` are one), or a copy
  (the same ROOT file UUID);
* they are simulated with the same generator settings and share a spill: every simulated
  spill has its own random stream, ``SeedSequence([seed, spill])``
  (:mod:`na64reco.sim.generate`), so the same ``seed``, setup, run, process, trigger,
  beam energy, mixture, spill size... (the metadata's ``simulation`` record but the
  ``conditions`` file paths, which name the same files of the same ``calib_tag`` from
  another checkout, ``n_beam`` and ``first_spill``) and overlapping spill ranges
  ``first_spill ... first_spill + ceil(n_beam / spill_particles) - 1`` give the same events
  (bit for bit when the code is the same).  Another seed, or the other spills of one seed
  (``first_spill``), are other events.  The run number is not part of the key: the streams
  do not depend on it, so ``--seed 1`` in runs 1001 and 1002 simulates the same beam
  particles (the run's period is: another period's setup makes other events);
* they are data (no ``simulation`` record) of one setup and run whose event-number ranges
  ``[first, last]`` overlap (consecutive files of a run hold disjoint ranges; a spill may
  straddle two files, so spill numbers may repeat and are not the key);
* they have the same content: the same checksum table (``sums_checksum`` of the metadata:
  the sums of every branch of every tree by block), whatever their metadata says.

A :class:`~na64reco.errors.ConfigError` names both files: with or without
``--skip-bad-files`` (the input list is wrong, not a file), since the events and beam
particles would be counted twice.
"""

from __future__ import annotations

import bisect
import json
import uuid as _uuid
from dataclasses import dataclass

from na64reco.errors import ConfigError
from na64reco.io import location
from na64reco.io.raw import RawFile, open_raw

#: keys of the ``simulation`` metadata that do not identify the random streams: the spills
#: (``n_beam``, ``first_spill``: compared as ranges) and the conditions' file paths
NOT_IDENTITY = ("conditions", "n_beam", "first_spill")


@dataclass(frozen=True)
class FileIdentity:
    """What :class:`DistinctFiles` compares of one file: small and picklable, so that the
    file can be opened in another process (the run's workers check the files of a large
    run, :mod:`na64reco.file_check`) and compared here."""

    uuid: bytes | None
    setup: str
    run: int
    has_truth: bool
    simulation: dict | None      # the metadata's ``simulation`` record, if any
    entries: dict                # the metadata's entries per tree
    sums_checksum: str | None    # the metadata's ``sums_checksum``
    event_span: tuple[int, int] | None  # first and last event number of a data file with events

    @classmethod
    def of(cls, raw: RawFile, event_numbers=None) -> FileIdentity:
        """The identity of the open file ``raw``; ``event_numbers``: its ``events.event`` if read
        already, or their first and last (:meth:`~na64reco.io.raw.EventIds.span_numbers`; only data
        files need them; scanned here otherwise, in bounded memory)."""
        sim = raw.meta.get("simulation")
        sim = sim if isinstance(sim, dict) else None
        span = None
        if not (sim is not None and sim.get("seed") is not None) and not raw.has_truth:
            numbers = raw.scan_ids().span_numbers() if event_numbers is None else event_numbers
            if len(numbers):
                span = (int(numbers[0]), int(numbers[-1]))
        u = raw.uuid
        return cls(u if isinstance(u, bytes) else None, raw.setup, raw.run, bool(raw.has_truth), sim,
                   dict(raw.meta.get("entries") or {}), raw.meta.get("sums_checksum"), span)


class DistinctFiles:
    """Files seen so far (of one dataset, or of one command's inputs); :meth:`path` and
    :meth:`add` raise a :class:`ConfigError` naming ``where``, the new file and the earlier
    one holding the same events.  Costs a dict or a bisection per file, nothing read but
    the event numbers of data files (:meth:`add`)."""

    def __init__(self, where: str):
        self.where = where
        self._seen: dict = {}  # (kind, key) -> path of the first file that had it
        self._spans: dict = {}  # group -> (sorted firsts, [(first, last, path)] in the same order)

    def path(self, path) -> None:
        """Refuse ``path`` if it was listed before (before the file is opened)."""
        self._once(("path", location.resolve(path)), path, "is listed twice (as {first})")

    def add(self, path, raw: RawFile | FileIdentity, event_numbers=None) -> None:
        """Refuse the file ``raw`` (open, or its :class:`FileIdentity`; listed as ``path``) if an
        earlier file holds its events, else remember it.  ``event_numbers``: its ``events.event``
        if read already (data files only need them; read here otherwise)."""
        ident = raw if isinstance(raw, FileIdentity) else FileIdentity.of(raw, event_numbers)
        u = ident.uuid
        if u is not None and len(u) == 16 and any(u):  # (a real UUID)
            self._once(("uuid", u), path, f"is a copy of {{first}} (the same ROOT file UUID {_uuid.UUID(bytes=u)})")
        sim = ident.simulation
        if sim is not None and sim.get("seed") is not None:
            self._simulated(path, ident, sim)
        elif ident.event_span is not None:
            self._span(("data", ident.setup, ident.run), *ident.event_span, path,
                       lambda first, a, b: f"holds events of {first}: both are data of setup {ident.setup!r} "
                                           f"run {ident.run} and their event numbers overlap ({a}-{b} here)",
                       "list each file once")
        content = ident.sums_checksum
        if content and any(int(n) for n in ident.entries.values()):
            self._once(("content", ident.has_truth, content, json.dumps(ident.entries, sort_keys=True)), path,
                       f"has the same content as {{first}} (the same checksum table, {content})")

    def _simulated(self, path, ident: FileIdentity, sim: dict) -> None:
        settings = {k: v for k, v in sim.items() if k not in NOT_IDENTITY}
        group = ("simulation", ident.setup, json.dumps(settings, sort_keys=True, default=str))  # any run
        first_spill = int(sim.get("first_spill") or 0)  # spills before this file's first (its first is first_spill + 1)
        n_beam, per_spill = sim.get("n_beam"), sim.get("spill_particles")
        last_spill = first_spill + -(-int(n_beam) // int(per_spill)) - 1 if n_beam and per_spill else 2**62
        what = (f"seed {sim['seed']}, setup {ident.setup!r}, period {sim.get('period')!r}, process "
                f"{sim.get('process')!r}, trigger {sim.get('trigger')!r} and the same other settings")
        self._span(group, first_spill, last_spill, path,
                   lambda first, a, b: f"holds the events of {first}: both were simulated with {what}, and "
                                       f"share spills {a + 1}-{b + 1} (each spill's random stream is (seed, spill), "
                                       "whatever the run number)",
                   "simulate one of them with another --seed (or other spills: --first-spill)")

    def _once(self, key, path, what: str) -> None:
        first = self._seen.get(key)
        if first is not None:
            raise self._twice(f"{path} {what.format(first=first)}")
        self._seen[key] = path

    def _span(self, group, lo: int, hi: int, path, what, advice: str) -> None:
        """``[lo, hi]`` of ``path`` against the disjoint ranges of ``group`` seen so far."""
        firsts, spans = self._spans.setdefault(group, ([], []))
        i = bisect.bisect_right(firsts, hi)  # ranges [i:] start after hi
        if i > 0 and spans[i - 1][1] >= lo:  # the range starting last at or before hi reaches lo
            a, b, first = spans[i - 1]
            raise self._twice(f"{path} {what(first, max(a, lo), min(b, hi))}", advice)
        firsts.insert(i, lo)
        spans.insert(i, (lo, hi, path))

    def _twice(self, what: str, advice: str = "list each file once") -> ConfigError:
        return ConfigError(f"{self.where}: {what}: its events and beam particles would be counted twice; {advice}")


def check_distinct(paths, where: str) -> None:
    """Open each of ``paths`` (metadata, ``events`` structure; the event numbers of data
    files) and refuse two that hold the same events (:class:`DistinctFiles`)."""
    distinct = DistinctFiles(where)
    for path in paths:
        distinct.path(path)
        with open_raw(path, structure=("events",)) as raw:
            distinct.add(path, raw)
