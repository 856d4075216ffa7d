"""Reconstruct whole raw files into per-event tables (Parquet or ROOT), chunk by chunk.

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
from na64reco.conditions import load_conditions
from na64reco.errors import RawFormatError
from na64reco.geometry import load_setup
from na64reco.io.raw import RawFile, open_raw
from na64reco.reco.event import attach_truth, reconstruct
from na64reco.reco.kinematics import restore_vectors


def provenance(raw, conditions, inputs) -> dict:
    return {
        "producer": f"na64reco {__version__}",
        "setup": raw.setup,
        "run": raw.run,
        "calibration_tag": conditions.tag,
        "conditions_files": conditions.files,
        "inputs": [str(p) for p in inputs],
        "has_truth": raw.has_truth,
    }


#: Events per chunk of ``na64reco reco``: bounds the memory and sets the steps of its
#: progress bar (a 100k-MOT na64mu file advances in 5 steps).
DEFAULT_CHUNK = 20_000


def iterate_reco(path, *, calib_tag: str | None = None, chunk_size: int = DEFAULT_CHUNK, with_truth: bool = True):
    """Yield (reco chunk, RawFile, RunConditions) for consecutive entry ranges of ``path``
    (a file name or an open :class:`~na64reco.io.raw.RawFile`)."""
    raw = path if isinstance(path, RawFile) else open_raw(path)
    setup = load_setup(raw.setup)
    conds = load_conditions(setup, raw.run, calib_tag)
    for start in range(0, max(raw.n_events, 1), chunk_size):
        stop = min(start + chunk_size, raw.n_events)
        if stop <= start:
            break
        reco = reconstruct(raw.events(start, stop), setup, conds, source=str(raw.path))
        if with_truth and raw.has_truth:
            reco = attach_truth(reco, raw.truth(start, stop))
        yield reco, raw, conds


def reconstruct_file(path, output, *, calib_tag: str | None = None, chunk_size: int = DEFAULT_CHUNK,
                     progress: bool = False) -> dict:
    """Reconstruct ``path`` into ``output`` (``.parquet`` or ``.root``); returns a summary.

    With ``progress`` a bar (on stderr) shows the events done; it advances chunk by chunk.
    """
    output = Path(output)
    if output.suffix not in (".parquet", ".root"):
        raise RawFormatError(f"{output}: output must end in .parquet or .root")
    opened = open_raw(path)
    if opened.n_events == 0:
        raise RawFormatError(f"{path}: no events to reconstruct")
    n = 0
    writer = None
    meta = None
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=opened.n_events, unit="ev", desc=Path(path).name)
    try:
        for reco, raw, conds in iterate_reco(opened, calib_tag=calib_tag, chunk_size=chunk_size):
            if meta is None:
                meta = provenance(raw, conds, [path])
            writer = _write_chunk(writer, output, reco, meta)
            n += len(reco)
            if bar is not None:
                bar.update(len(reco))
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    if meta is None:
        raise RawFormatError(f"{path}: no events to reconstruct")
    return {"events": n, "output": str(output), **meta}


def _write_chunk(writer, output: Path, reco: ak.Array, meta: dict):
    if output.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = ak.to_arrow_table(reco, extensionarray=True)  # keeps the vector record names
        if writer is None:
            schema = table.schema.with_metadata({"na64reco": json.dumps(meta)})
            writer = pq.ParquetWriter(output, schema, compression="zstd")
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
        writer["na64reco"] = json.dumps(meta)
    writer["reco"].extend(flat)
    return writer


def read_reco(path) -> tuple[ak.Array, dict]:
    """Read a Parquet reco file back: (records, provenance); ``mu_in`` / ``mu_out`` are vectors."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"na64reco"])
    return restore_vectors(ak.from_arrow(table)), meta
