"""Reconstruct whole raw files into per-event tables (Parquet or ROOT), chunk by chunk."""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak

from na64reco import __version__
from na64reco.conditions import load_conditions
from na64reco.errors import RawFormatError
from na64reco.geometry import load_setup
from na64reco.io.location import display_name
from na64reco.io.raw import open_raw
from na64reco.reco.event import attach_truth, reconstruct


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


def iterate_reco(path, *, calib_tag: str | None = None, chunk_size: int = 100_000, with_truth: bool = True):
    """Yield (reco chunk, RawFile, RunConditions) for consecutive entry ranges of ``path``."""
    raw = open_raw(path)
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


def reconstruct_file(path, output, *, calib_tag: str | None = None, chunk_size: int = 100_000,
                     progress: bool = False) -> dict:
    """Reconstruct ``path`` into ``output`` (``.parquet`` or ``.root``); returns a summary."""
    output = Path(output)
    if output.suffix not in (".parquet", ".root"):
        raise RawFormatError(f"{output}: output must end in .parquet or .root")
    n = 0
    writer = None
    meta = None
    try:
        bar = None
        for reco, raw, conds in iterate_reco(path, calib_tag=calib_tag, chunk_size=chunk_size):
            if meta is None:
                meta = provenance(raw, conds, [path])
                if progress:
                    from tqdm import tqdm

                    bar = tqdm(total=raw.n_events, unit="ev", desc=display_name(path))
            writer = _write_chunk(writer, output, reco, meta)
            n += len(reco)
            if bar:
                bar.update(len(reco))
        if bar:
            bar.close()
    finally:
        if writer is not None:
            writer.close()
    if meta is None:
        raise RawFormatError(f"{path}: no events to reconstruct")
    return {"events": n, "output": str(output), **meta}


def _write_chunk(writer, output: Path, reco: ak.Array, meta: dict):
    if output.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = ak.to_arrow_table(reco, extensionarray=False)
        if writer is None:
            schema = table.schema.with_metadata({"na64reco": json.dumps(meta)})
            writer = pq.ParquetWriter(output, schema, compression="zstd")
        writer.write_table(pa.Table.from_batches(table.to_batches(), schema=writer.schema))
        return writer
    import uproot

    flat = {}
    for name in reco.fields:
        col = reco[name]
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
    """Read a Parquet reco file back: (records, provenance)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"na64reco"])
    return ak.from_arrow(table), meta
