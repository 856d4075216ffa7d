"""The floor under any reconstruction of the raw data: minimal passes over the digits, as multiples of the read.

    python benchmarks/bench_floor.py --file RAW.root [--repeat 7] [--chunk 50000] [--no-reco]

Issue 11 asks for read + reconstruction <= 2x the plain read, i.e. ``reconstruct`` costing no more
than reading and decompressing the same bytes.  This measures, in one process and alternated round
by round, what the least work per digit that any reconstruction of these detectors needs costs on
the same file, against the plain uproot read of the ``events`` tree (all branches, chunks of
``--chunk`` events: the baseline of ``bench_reco.py``):

* **MSADC floor**: per calorimeter digit (32 samples), the two parity pedestals from the first
  ``pedestal_samples`` samples, the pedestal-subtracted maximum and the half-maximum time on the
  rising edge (one interpolation); no template fit, no pile-up scan, no checks, no conditions;
* **APV floor**: per tracker digit, the amplitude (largest of the 3 samples) and one ratio time
  (``a1 / a2``), then runs of adjacent channels of a plane (the digits are stored by plane and
  channel) with their amplitude-weighted centroid and mean time; no de-multiplexing of the MM
  planes (5 strips per channel), no strip times from a response table, no hit selection;
* **calorimeter sums**: each MSADC amplitude added into its event's detector total.

The floor leaves out the track search and fits, the MM de-multiplexing, the straw tubes, every
input check and every output record: it bounds ``reconstruct`` from below.  Printed: the CPU time
of each pass (minimum over the rounds, chunks already in memory as flat arrays) and as a multiple
of the read, their sum, and (unless ``--no-reco``) ``reconstruct`` itself on the same chunks.
If the floor alone is close to 1x the read, read + reconstruction <= 2x needs the whole
reconstruction to cost what these few passes cost.  A figure, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time

import awkward as ak
import numba
import numpy as np
import uproot

from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup
from na64reco.io.raw import assemble_events, event_branches, open_raw
from na64reco.reco.event import reconstruct
from na64reco.reco.waveform import reconstruct_digits, waveform_config


@numba.njit(cache=True, nogil=True)
def msadc_floor(adc, n_ped, period):
    """Amplitude and half-maximum time (ns from the first sample) of each row of ``adc`` (n, ns)."""
    n, ns = adc.shape
    amp = np.empty(n)
    tim = np.empty(n)
    y = np.empty(ns)
    for i in range(n):
        se = 0.0
        so = 0.0
        for j in range(n_ped // 2):
            se += adc[i, 2 * j]
            so += adc[i, 2 * j + 1]
        pe = se / (n_ped // 2)
        po = so / (n_ped // 2)
        imax = 0
        for k in range(ns):
            y[k] = adc[i, k] - (po if k & 1 else pe)
            if y[k] > y[imax]:
                imax = k
        half = 0.5 * y[imax]
        t = 0.0
        for k in range(imax - 1, -1, -1):
            if y[k] < half:
                t = period * (k + (half - y[k]) / (y[k + 1] - y[k]))
                break
        amp[i] = y[imax]
        tim[i] = t
    return amp, tim


@numba.njit(cache=True, nogil=True)
def apv_floor(plane, chan, a0, a1, a2):
    """Runs of adjacent channels of a plane: (first digit, centroid, mean time ratio) of each run
    (digits stored by event, plane and channel; a run ends where the plane changes or a channel is
    skipped)."""
    n = plane.size
    first = np.empty(n, np.int64)
    centroid = np.empty(n)
    ratio = np.empty(n)
    m = -1
    sw = swc = swt = 0.0
    for i in range(n):
        a = max(a0[i], max(a1[i], a2[i]))
        r = a1[i] / a2[i] if a2[i] > 0 else 0.0
        if i == 0 or plane[i] != plane[i - 1] or chan[i] != chan[i - 1] + 1:
            if m >= 0:
                centroid[m] = swc / sw if sw > 0 else 0.0
                ratio[m] = swt / sw if sw > 0 else 0.0
            m += 1
            first[m] = i
            sw = swc = swt = 0.0
        sw += a
        swc += a * chan[i]
        swt += a * r
    if m >= 0:
        centroid[m] = swc / sw if sw > 0 else 0.0
        ratio[m] = swt / sw if sw > 0 else 0.0
    return first[:m + 1], centroid[:m + 1], ratio[:m + 1]


@numba.njit(cache=True, nogil=True)
def calo_sums(offsets, det, amp, n_det):
    """Per event, the amplitudes added up per detector (ECAL, HCAL, veto, counters)."""
    n = offsets.size - 1
    sums = np.zeros((n, n_det))
    for e in range(n):
        for j in range(offsets[e], offsets[e + 1]):
            sums[e, det[j]] += amp[j]
    return sums


def _cpu(fn):
    t = time.process_time()
    fn()
    return time.process_time() - t


def _flat(chunk, n_samples):
    """The flat inputs of the passes from one chunk of branches (not timed: reconstruct gets the
    same arrays through ``assemble_events`` at ~no cost)."""
    def content(name):
        return np.asarray(ak.flatten(chunk[name]))

    counts = np.asarray(chunk["ncalo"], np.int64)
    offsets = np.zeros(counts.size + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return {
        "adc": content("calo_adc").reshape(-1, n_samples),
        "calo": (offsets, content("calo_det").astype(np.int64)),
        "apv": tuple(content(b) for b in ("apv_plane", "apv_chan", "apv_a0", "apv_a1", "apv_a2")),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--file", required=True, help="raw file (e.g. na64reco simulate ... --trigger calibration)")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--chunk", type=int, default=50000)
    ap.add_argument("--no-reco", action="store_true", help="leave out reconstruct itself")
    args = ap.parse_args(argv)

    path = args.file
    with open_raw(path) as raw:
        setup = load_setup(raw.setup, run=raw.run)
        conds = load_conditions(setup, raw.run)
    with uproot.open(path) as f:
        chunks = list(f["events"].iterate(event_branches(), step_size=args.chunk))
    n_events = sum(len(c) for c in chunks)
    m = setup.msadc
    n_ped = waveform_config(setup).pedestal_samples
    flats = [_flat(c, m.n_samples) for c in chunks]
    n_det = 1 + max(int(c["calo"][1].max()) for c in flats)
    nested = [assemble_events(c, str(path)) for c in chunks]

    def read():
        with uproot.open(path) as f:
            for _ in f["events"].iterate(event_branches(), step_size=args.chunk):
                pass

    amps = [msadc_floor(c["adc"], n_ped, float(m.sample_period))[0] for c in flats]  # compile; the sums' input
    passes = {
        "MSADC floor (pedestals, maximum, half-maximum time)":
            lambda: [msadc_floor(c["adc"], n_ped, float(m.sample_period)) for c in flats],
        "APV floor (amplitude, ratio time, runs, centroids)": lambda: [apv_floor(*c["apv"]) for c in flats],
        "calorimeter sums per event and detector":
            lambda: [calo_sums(*c["calo"], a, n_det) for c, a in zip(flats, amps, strict=True)],
    }
    if not args.no_reco:
        passes["reconstruct (the library)"] = lambda: [reconstruct(e, setup, conds, source=str(path)) for e in nested]
    for fn in (read, *passes.values()):  # compile and warm (the read's first allocations fault pages in)
        fn()

    times = {"read": []} | {k: [] for k in passes}
    for _ in range(args.repeat):
        times["read"].append(_cpu(read))
        for k, fn in passes.items():
            times[k].append(_cpu(fn))
    best = {k: min(v) for k, v in times.items()}
    r = best["read"]
    n_msadc = sum(c["adc"].shape[0] for c in flats)
    n_apv = sum(c["apv"][0].size for c in flats)
    print(f"file {path}: {n_events} events, chunks of {args.chunk}, {n_msadc} MSADC digits, {n_apv} APV digits; "
          f"CPU s, minimum of {args.repeat} alternated rounds")
    print(f"  {'plain uproot read of events (baseline)':55s} {r:7.3f} s   1.00 x")
    floor = 0.0
    for k in passes:
        print(f"  {k:55s} {best[k]:7.3f} s  {best[k] / r:5.2f} x   (median {statistics.median(times[k]):.3f} s)")
        if not k.startswith("reconstruct"):
            floor += best[k]
    print(f"  {'floor: the three passes together':55s} {floor:7.3f} s  {floor / r:5.2f} x")
    print(f"read + floor = {1 + floor / r:.2f} x the read (goal for read + reconstruction: <= 2 x)")
    # the floor computes comparable quantities: its MSADC amplitudes and times against the template fit's
    first = flats[0]
    calo_chan = np.asarray(ak.flatten(chunks[0]["calo_chan"]))
    fit = reconstruct_digits(first["calo"][1], calo_chan, first["adc"], setup, conds, source=str(path))
    f_amp, f_time = msadc_floor(first["adc"], n_ped, float(m.sample_period))
    good = (fit.flags == 0) & (fit.amplitude > 50)
    ratio = f_amp[good] / fit.amplitude[good]
    width = np.diff(np.percentile(ratio, [16, 84]))[0] / 2
    dt = (f_time - fit.time)[good]  # the fit's time has each channel's delay removed: compare per channel
    _, channel = np.unique(first["calo"][1][good] * 4096 + calo_chan[good], return_inverse=True)
    dt -= np.array([np.median(dt[channel == c]) for c in range(channel.max() + 1)])[channel]
    print(f"check on the first chunk's {int(good.sum())} clean MSADC digits above 50 ADC: floor amplitude / fitted "
          f"amplitude median {np.median(ratio):.3f} (16-84 % half-width {width:.3f}); floor time - fitted time "
          f"around each channel's median: RMS {np.std(dt):.2f} ns")
    if not args.no_reco:
        rec = best["reconstruct (the library)"]
        print(f"read + reconstruct = {1 + rec / r:.2f} x the read; reconstruct = {rec / floor:.2f} x the floor")


if __name__ == "__main__":
    main()
