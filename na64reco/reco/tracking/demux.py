"""Micromegas de-multiplexing: fired APV channels -> strip clusters.

Each of the 64 channels of an MM plane reads one strip in each of the 5 strip groups
(``readout.mm_strips_of_channel``).  The multiplex steps are chosen so that two
*adjacent* strips of one group are read by channels whose other candidates are never
adjacent (the +-steps are distinct), so a real cluster of >= 2 strips shows up as a run
of adjacent candidate strips in its own group only.

Algorithm, per plane and event:

1. every fired channel proposes its candidate strips (dead strips excluded);
2. the candidates are sorted; runs of adjacent strips (length >= 2) are cluster
   candidates;
3. runs are accepted greedily: repeatedly the longest run (then the largest summed
   amplitude, then the lowest strip) among candidates whose channel is not yet assigned
   (so a run that bridges into another cluster's channel is trimmed, not lost); a run
   never contains one channel twice;
4. a channel left over (a single-strip cluster, or a noise channel) cannot be resolved
   locally: **all its candidate strips are kept as hits flagged ambiguous**, sharing one
   origin id; track finding uses at most one of them per track (a wrong candidate is
   16 mm or more away from the track and fails the chi2).

Known limitation: a cluster of 4-5 strips straddling the boundary of groups 3 and 4
(strips ~255-260) has the same channels as the run shifted by one strip (channel 51
reads both strips 255 and 259); the lower run is chosen (a 0.25 mm shift).

:func:`demux_plane_into` is the numba kernel (:func:`demux_plane` a convenience wrapper);
:func:`demux_plane_reference` its slow twin.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, inline="always")
def _isort(keys, idx, n):
    """Insertion sort of ``idx[:n]`` by ``keys[idx]`` (stable; fast for the short lists here)."""
    for i in range(1, n):
        v = idx[i]
        kv = keys[v]
        j = i - 1
        while j >= 0 and keys[idx[j]] > kv:
            idx[j + 1] = idx[j]
            j -= 1
        idx[j + 1] = v


@numba.njit(cache=True)
def demux_plane_into(chans, amps, n, table, dead, ws_i, ws_f, strips, owner, run_start, run_len, singles):
    """Resolve one MM plane without allocating (workspace arrays given by the caller).

    ``chans[:n]`` fired channels (distinct), ``amps[:n]`` amplitudes, ``table``
    (channels, groups) strip of each channel in each group, ``dead`` (n_strips,) bool.
    ``ws_i`` (int64, >= 2 * n * groups) is scratch; ``ws_f`` is unused (kept for callers).

    Fills ``strips``/``owner`` (sorted candidate strips and the index of the channel
    owning each), ``run_start``/``run_len`` (accepted runs as slices of ``strips``) and
    ``singles`` (unresolved channel indices).  Returns ``(n_cand, n_runs, n_singles)``.
    """
    groups = table.shape[1]
    m = 0
    # candidates inserted group by group: the setup's groups are increasing strip ranges,
    # so each insertion moves past the few candidates of its own group only
    for k in range(groups):
        for j in range(n):
            s = table[chans[j], k]
            if dead[s]:
                continue
            q = m
            while q > 0 and strips[q - 1] > s:
                strips[q] = strips[q - 1]
                owner[q] = owner[q - 1]
                q -= 1
            strips[q] = s
            owner[q] = j
            m += 1
    # greedy: repeatedly accept the best run of adjacent candidate strips whose channels
    # are all unassigned (longest first, then largest summed amplitude, then lowest strip).
    # Only a candidate followed by an adjacent strip can start a run of >= 2.
    used = ws_i[:n]
    for j in range(n):
        used[j] = 0
    starts = ws_i[n:n + m]
    n_starts = 0
    for i in range(m - 1):
        if strips[i + 1] == strips[i] + 1:
            starts[n_starts] = i
            n_starts += 1
    n_runs = 0
    while n_starts > 0:
        best_s = -1
        best_l = 1
        best_a = 0.0
        for w in range(n_starts):
            i = starts[w]
            if used[owner[i]]:
                continue
            e = i
            tot = amps[owner[i]]
            while e + 1 < m and strips[e + 1] == strips[e] + 1 and not used[owner[e + 1]]:
                dup = False  # a channel reads one strip of a cluster at most
                for q in range(i, e + 1):
                    if owner[q] == owner[e + 1]:
                        dup = True
                if dup:
                    break
                e += 1
                tot += amps[owner[e]]
            ln = e - i + 1
            if ln > best_l or (ln == best_l and ln >= 2 and tot > best_a):
                best_s = i
                best_l = ln
                best_a = tot
        if best_s < 0:
            break
        for q in range(best_s, best_s + best_l):
            used[owner[q]] = 1
        run_start[n_runs] = best_s
        run_len[n_runs] = best_l
        n_runs += 1
    n_singles = 0
    for j in range(n):
        if not used[j]:
            singles[n_singles] = j
            n_singles += 1
    return m, n_runs, n_singles


def demux_plane(chans, amps, table, dead):
    """Convenience wrapper of :func:`demux_plane_into` returning
    ``(clusters as [[(strip, channel index), ...]], unresolved channel indices)``."""
    chans = np.asarray(chans, np.int64)
    amps = np.asarray(amps, np.float64)
    n, g = len(chans), table.shape[1]
    ws_i, ws_f = np.zeros(4 * n * g + 1, np.int64), np.zeros(2 * n * g + 1)
    strips, owner = np.zeros(n * g + 1, np.int64), np.zeros(n * g + 1, np.int64)
    rstart, rlen, singles = (np.zeros(n * g + 1, np.int64) for _ in range(3))
    m, nr, ns = demux_plane_into(chans, amps, n, np.asarray(table, np.int64), np.asarray(dead, np.bool_),
                                 ws_i, ws_f, strips, owner, rstart, rlen, singles)
    clusters = [[(int(strips[q]), int(owner[q])) for q in range(rstart[r], rstart[r] + rlen[r])] for r in range(nr)]
    return clusters, [int(j) for j in singles[:ns]]


def demux_plane_reference(chans, amps, table, dead):
    """Slow twin of :func:`demux_plane`, same return values."""
    cands = sorted((int(table[c, k]), j) for j, c in enumerate(chans) for k in range(table.shape[1])
                   if not dead[table[c, k]])
    used, clusters = set(), []
    while True:
        free = [c for c in cands if c[1] not in used]
        runs = []
        for i in range(len(free)):  # the longest run starting at every free candidate
            run = [free[i]]
            for c in free[i + 1:]:
                if c[0] != run[-1][0] + 1 or any(c[1] == o for _, o in run):
                    break
                run.append(c)
            runs.append(run)
        runs = [r for r in runs if len(r) >= 2]
        if not runs:
            break
        # max() returns the first maximal element: the lowest strip among ties
        best = max(runs, key=lambda r: (len(r), sum(float(amps[j]) for _, j in r)))
        used.update(j for _, j in best)
        clusters.append(best)
    return [[(int(s), int(j)) for s, j in c] for c in clusters], [j for j in range(len(chans)) if j not in used]
