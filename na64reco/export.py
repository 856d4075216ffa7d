"""Reconstructed events of whole raw files, chunk by chunk, as records or tables (Parquet
or ROOT) -- with the protected region of *data* withheld.

For a data file (no truth) every event not provably outside the setup's protected region
(``selections/blinding.yaml``: NA64mu p_out < 80 GeV, NA64e E_ECAL < 50 GeV, except the
visible veto controls) is withheld before a record leaves this module; the number withheld
and the rule are in the summary and in the file metadata (``blinding``).  Only
``na64reco unblind`` opens that region.  (This module sits above the selection layer for
that reason; the reconstruction stage functions refuse data events outright.)

Parquet keeps the awkward types (extension types in the Arrow schema): ``mu_in`` /
``mu_out`` come back from ``ak.from_parquet`` as ``Momentum4D`` vector records once
``vector.register_awkward()`` ran (importing :mod:`na64reco.reco.kinematics` does).  ROOT
stores flat branches: a per-module field ``x`` as ``x_0``, ``x_1``...; a vector field
``mu_out`` as ``mu_out_px``, ``mu_out_py``, ``mu_out_pz``, ``mu_out_mass`` (NaN where the
vector is missing); :func:`~na64reco.reco.kinematics.restore_vectors` rebuilds the records.
"""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np

from na64reco import __version__
from na64reco.atomic import check_new_output
from na64reco.config import integer_at_least
from na64reco.errors import RawFormatError
from na64reco.io.location import display_name
from na64reco.io.raw import RawFile, check_event_order, check_spill_counts_of, open_raw, release_data_events
from na64reco.job_defaults import EXPORT_CHUNK
from na64reco.reco.event import attach_truth, reconstruct
from na64reco.reco.kinematics import restore_vectors
from na64reco.selection.blinding import protection_text, reference_protected, withhold_protected


def provenance(raw, conditions, inputs) -> dict:
    return {
        "producer": f"na64reco {__version__}",
        "setup": raw.setup,
        "run": raw.run,
        "calibration_tag": conditions.tag,
        "conditions_files": conditions.files,
        "inputs": [str(p) for p in inputs],
        "has_truth": raw.has_truth,
        "blinding": ({"withheld_region": protection_text(raw.setup), "withheld_events": 0,
                      "opened_by": "na64reco unblind only"} if not raw.has_truth else None),
    }




def iterate_reco(path, *, calib_tag: str | None = None, chunk_size: int = EXPORT_CHUNK, with_truth: bool = True,
                 withheld: list | None = None):
    """Yield (reco chunk, RawFile, RunConditions) for consecutive entry ranges of ``path``
    (a file name or an open :class:`~na64reco.io.raw.RawFile`).

    For data the events of the protected region are withheld from every chunk; the number
    withheld from each chunk is appended to ``withheld`` if a list is given.  Event numbers
    must increase across the chunks too (within a chunk the read checks them): a chunk
    restarting them is a :class:`RawFormatError` naming the file and both entries."""
    integer_at_least(chunk_size, 1, "iterate_reco(): chunk_size")
    raw = path if isinstance(path, RawFile) else open_raw(path)
    ids = raw.scan_ids()  # (as the runner's check before a run, in bounded memory)
    check_spill_counts_of(ids.spills, ids.counts, raw.spills(), raw.path)
    setup = raw.run_setup()  # (errors name the file)
    conds = raw.run_conditions(setup, calib_tag)
    previous = None  # event number of the last entry of the chunk before
    for start in range(0, raw.n_events, chunk_size):
        stop = min(start + chunk_size, raw.n_events)
        events = raw.events(start, stop)
        numbers = np.asarray(events["event"])
        check_event_order(numbers[:1], raw.path, start, previous)
        previous = numbers[-1] if len(numbers) else previous
        if raw.has_truth:
            reco = reconstruct(events, setup, conds, source=str(raw.path))
            if with_truth:
                reco = attach_truth(reco, raw.truth(start, stop), str(raw.path), start)
        else:  # data: reconstruct, then withhold the protected region before it leaves (also that of
            # the reference reconstruction: a tag or NA64RECO_CALIB moving p_out / E_ECAL opens nothing)
            events = release_data_events(events)
            reco = reconstruct(events, setup, conds, source=str(raw.path))
            reference = reference_protected(
                events, setup, conds, lambda ev, s, c, stages=None: reconstruct(ev, s, c, str(raw.path), stages=stages),
                reco=reco)
            reco, n_hidden = withhold_protected(reco, raw.setup, reference)
            if withheld is not None:
                withheld.append(n_hidden)
        yield reco, raw, conds


def reconstruct_file(path, output, *, calib_tag: str | None = None, chunk_size: int = EXPORT_CHUNK,
                     progress: bool = False) -> dict:
    """Reconstruct ``path`` into ``output`` (``.parquet`` or ``.root``); returns a summary.

    With ``progress`` a bar (on stderr) shows the events done; it advances chunk by chunk.
    """
    output = Path(output)
    if output.suffix not in (".parquet", ".root"):
        raise RawFormatError(f"{output}: output must end in .parquet or .root")
    check_new_output(output, overwrite=True, inputs=[path])  # replacing the raw file would delete it
    opened = open_raw(path)
    if opened.n_events == 0:
        raise RawFormatError(f"{path}: no events to reconstruct")
    n = 0
    writer = None
    meta = None
    bar = None
    withheld: list[int] = []
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=opened.n_events, unit="ev", desc=display_name(path))
    try:
        for reco, raw, conds in iterate_reco(opened, calib_tag=calib_tag, chunk_size=chunk_size, withheld=withheld):
            if meta is None:
                meta = provenance(raw, conds, [path])
            writer = _write_chunk(writer, output, reco)
            n += len(reco)
            if bar is not None:
                bar.update(len(reco) + (withheld[-1] if withheld else 0))
        if meta is not None and meta["blinding"] is not None:
            meta["blinding"]["withheld_events"] = sum(withheld)
        if writer is not None:
            _write_meta(writer, output, meta)
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    return {"events": n, "output": str(output), **meta}


def _write_meta(writer, output: Path, meta: dict) -> None:
    """The provenance (and what was withheld), written once all chunks are known."""
    if output.suffix == ".parquet":
        writer.add_key_value_metadata({"na64reco": json.dumps(meta)})
    else:
        writer["na64reco"] = json.dumps(meta)


def _write_chunk(writer, output: Path, reco: ak.Array):
    if output.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = ak.to_arrow_table(reco, extensionarray=True)  # keeps the vector record names
        if writer is None:
            writer = pq.ParquetWriter(output, table.schema, compression="zstd")
        writer.write_table(pa.Table.from_batches(table.to_batches(), schema=writer.schema))
        return writer
    import uproot

    flat = {}
    for name in reco.fields:
        col = reco[name]
        if col.fields:  # a vector record: one branch per component, NaN where missing
            for sub in col.fields:
                flat[f"{name}_{sub}"] = ak.to_numpy(ak.fill_none(col[sub], np.nan))
            continue
        arr = ak.to_numpy(col)
        if arr.ndim == 2:
            for k in range(arr.shape[1]):
                flat[f"{name}_{k}"] = arr[:, k]
        else:
            flat[name] = arr
    if writer is None:
        writer = uproot.recreate(output)
        writer.mktree("reco", {k: v.dtype for k, v in flat.items()})
    writer["reco"].extend(flat)
    return writer


def read_reco(path) -> tuple[ak.Array, dict]:
    """Read a Parquet reco file back: (records, provenance); ``mu_in`` / ``mu_out`` are vectors.
    (A ``.root`` output is a flat TTree ``reco``, its provenance the string ``na64reco``: read it with
    uproot.)"""
    import pyarrow.parquet as pq

    if Path(path).suffix != ".parquet":
        raise RawFormatError(f"{path}: read_reco reads the Parquet output of reconstruct_file (.parquet); a .root "
                             "output is a flat TTree: uproot.open(path)['reco'].arrays(), provenance "
                             "uproot.open(path)['na64reco']")
    table = pq.read_table(path)
    meta = json.loads(pq.read_metadata(path).metadata[b"na64reco"])
    return restore_vectors(ak.from_arrow(table)), meta
