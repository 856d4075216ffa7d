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

:func:`demux_plane_mask` is the numba kernel, inlined into the hits kernel (:func:`demux_plane` a
convenience wrapper that builds its tables); :func:`demux_plane_reference` its slow twin.  The
kernel reads per-plane tables built once (:func:`strip_channel_map`, :func:`candidate_words`,
:func:`channel_words`): the candidate strips as bits.  Its channel map needs every strip read by
one channel only, which :class:`~na64reco.reco.tracking.clusters.PlaneTables` checks
(:func:`check_table`).
"""

from __future__ import annotations

import numba
import numpy as np

from na64reco.reco.tracking._jit import INLINED, NO_NRT

# _NO_NRT: the de-multiplexer runs once per MM plane and event (~10 per event) on arrays its
# caller owns, and allocates nothing.  Compiled with numba's runtime (NRT), every call
# incremented and decremented the reference count of each of its ~10 array arguments (and of
# those it passes on), atomic operations that perf showed as ~12 % of the hits kernel; compiled
# without it (``_nrt=False``: numba then refuses any allocation in these functions) the calls
# pass the arrays without: hits kernel 0.167 -> 0.140 s per 50k events, identical hits.


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


def strip_channel_map(table, dead) -> np.ndarray:
    """The channel map :func:`demux_plane_mask` reads for one plane: ``m[s + 1]`` is the channel
    reading strip ``s`` if the strip is live, else ``table.shape[0]`` (a sentinel, as are
    ``m[0]`` and the entries past the last strip: "no candidate" at both ends).  ``dead``:
    (>= n_strips,) bool; the map has ``max(table.max() + 1, len(dead)) + 2`` entries."""
    table = np.asarray(table, np.int64)
    width = max(int(table.max()) + 1, len(dead))
    padded = np.zeros(width, np.bool_)
    padded[:len(dead)] = dead
    m = np.full(width + 2, table.shape[0], np.int64)
    chans = np.repeat(np.arange(table.shape[0]), table.shape[1])
    strips = table.reshape(-1)
    live = ~padded[strips]
    m[strips[live] + 1] = chans[live]
    return m


def candidate_words(strip_chan) -> np.ndarray:
    """The live strips of one plane as bits, the layout :func:`demux_plane_mask` reads: uint64
    words, bit ``s % 64`` of word ``s // 64`` set where ``strip_chan[s + 1]`` (its
    :func:`strip_channel_map`) names a channel, i.e. strip ``s`` exists and is live; at least one
    word past the last strip (always 0), so ``s + 1`` of the last strip has a word."""
    strip_chan = np.asarray(strip_chan, np.int64)
    nch = strip_chan.max()  # the sentinel: the map's ends always hold it
    live = np.flatnonzero(strip_chan[1:-1] < nch)
    words = np.zeros((len(strip_chan) - 3) // 64 + 2, np.uint64)  # strips 0..len - 3, then a 0 word
    np.bitwise_or.at(words, live // 64, np.left_shift(np.uint64(1), (live % 64).astype(np.uint64)))
    return words


def channel_words(table, n_words) -> np.ndarray:
    """Per channel of the readout ``table`` (channels, groups) its strips as bits: uint64
    ``(channels, n_words)``, bit ``s % 64`` of word ``s // 64`` set for each strip ``s`` the
    channel reads (``n_words``: :func:`candidate_words`'s length, which covers every strip)."""
    table = np.asarray(table, np.int64)
    out = np.zeros((table.shape[0], n_words), np.uint64)
    for c in range(table.shape[0]):
        for s in table[c]:
            out[c, s // 64] |= np.uint64(1 << int(s % 64))
    return out


#: index of the set bit of a power of two ``b`` (uint64): ``_DEBRUIJN[(b * _DEBRUIJN_K) >> 58]``
_DEBRUIJN_K = np.uint64(0x03F79D71B4CB0A89)
_DEBRUIJN = np.zeros(64, np.int64)
for _i in range(64):
    _DEBRUIJN[(((1 << _i) * int(_DEBRUIJN_K)) % (1 << 64)) >> 58] = _i


@numba.njit(cache=True, inline="always")
def _has(words, s):
    """True if bit ``s`` of the word array is set."""
    return (words[s >> 6] >> np.uint64(s & 63)) & np.uint64(1) != np.uint64(0)


@numba.njit(cache=True, **INLINED, **NO_NRT)
def demux_plane_mask(chans, amps, n, chan_words, strip_chan, live, cand, cidx, used, starts, run_start, run_len,
                     singles):
    """Resolve one MM plane without allocating and without sorting (workspaces given by the caller).

    ``chans[:n]`` fired channels (distinct), ``amps[:n]`` amplitudes.  Fills ``run_start`` and
    ``run_len`` (accepted runs: first strip and length; the run's strips are ``run_start ..
    run_start + run_len - 1``, their channels' indices ``cidx[strip_chan[strip + 1]]``) and
    ``singles`` (unresolved channel indices, ascending); returns ``(n_runs, n_singles)``, the runs
    and their order those of :func:`demux_plane_reference` (the greedy search: the longest run of
    adjacent candidate strips with unassigned channels first, then the largest summed amplitude,
    then the lowest strip).  ``used`` (int64, >= n) and ``starts`` (int64, >= n x groups) are
    scratch, ``singles`` (>= n x groups) too for the greedy search; ``cidx`` (int64, one entry per
    channel of the table and one more) must be -1 everywhere on entry and holds each fired
    channel's index on return, reset to -1 by the caller.

    The candidate strips are a bit set: each word of it is the OR of the fired channels' words
    (``chan_words``: :func:`channel_words` of the readout table, no branch), masked by the live
    strips (``live``: :func:`candidate_words` of the plane); the segment starts are the bits whose
    next strip is a candidate and whose previous one is not, found by shifts over whole words
    (``cand``: uint64 scratch of ``len(live)`` words, overwritten).  A plane without any pair of
    adjacent candidates (all singles) costs the ORs and one pass over the words.

    The segments are found in strip order (the fifth pass's channel map found them in
    channel-then-group order); neither the run order (a total order on (length, summed amplitude,
    -first strip), made by insertion), nor the test for a channel in two segments, nor the greedy
    search (its best run does not depend on the scan order) depends on that order."""
    nw = live.shape[0]
    one = np.uint64(1)
    for j in range(n):
        cidx[chans[j]] = j
        used[j] = 0
    w0 = 0
    while w0 + 8 <= nw:  # eight words at a time, channel by channel: the OR chains stay in registers
        c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = np.uint64(0)
        for j in range(n):
            r = chans[j]
            c0 |= chan_words[r, w0]
            c1 |= chan_words[r, w0 + 1]
            c2 |= chan_words[r, w0 + 2]
            c3 |= chan_words[r, w0 + 3]
            c4 |= chan_words[r, w0 + 4]
            c5 |= chan_words[r, w0 + 5]
            c6 |= chan_words[r, w0 + 6]
            c7 |= chan_words[r, w0 + 7]
        cand[w0] = c0 & live[w0]
        cand[w0 + 1] = c1 & live[w0 + 1]
        cand[w0 + 2] = c2 & live[w0 + 2]
        cand[w0 + 3] = c3 & live[w0 + 3]
        cand[w0 + 4] = c4 & live[w0 + 4]
        cand[w0 + 5] = c5 & live[w0 + 5]
        cand[w0 + 6] = c6 & live[w0 + 6]
        cand[w0 + 7] = c7 & live[w0 + 7]
        w0 += 8
    for w in range(w0, nw):  # the rest word by word (none with PlaneTables' tables, padded to eight)
        acc = np.uint64(0)
        for j in range(n):
            acc |= chan_words[chans[j], w]
        cand[w] = acc & live[w]
    n_runs = 0
    n_seg = np.int64(0)  # (not a literal 0: _greedy_segments would be compiled twice, see _jit.py)
    twice = False
    prev = np.uint64(0)
    for w in range(nw - 1):  # the last word is 0 (candidate_words): no start there
        cur = cand[w]
        # s a candidate, s + 1 one (the next word's bit 0 for bit 63), s - 1 not
        st = cur & ((cur >> one) | (cand[w + 1] << np.uint64(63))) & ~((cur << one) | (prev >> np.uint64(63)))
        prev = cur
        while st != np.uint64(0):
            low = st & (~st + one)  # the lowest start of the word
            st ^= low
            b = _DEBRUIJN[(low * _DEBRUIJN_K) >> np.uint64(58)]
            s = (w << 6) + b
            gap = ~cur >> np.uint64(b)  # bit k: strip s + k is no candidate (0 above the word's end)
            if gap != np.uint64(0):  # the segment ends in this word: at the lowest such bit, less one
                e = s - 1 + _DEBRUIJN[((gap & (~gap + one)) * _DEBRUIJN_K) >> np.uint64(58)]
            else:  # it runs into the next word
                e = s + 1
                while _has(cand, e + 1):
                    e += 1
            starts[2 * n_seg] = s
            starts[2 * n_seg + 1] = e
            n_seg += 1
            if twice:
                continue
            # the channels marked used and their amplitudes summed from the first strip (as _map_sum)
            jj = cidx[strip_chan[s + 1]]
            twice |= used[jj] != 0
            used[jj] = 1
            tot = amps[jj]
            for q in range(s + 1, e + 1):
                jj = cidx[strip_chan[q + 1]]
                twice |= used[jj] != 0
                used[jj] = 1
                tot += amps[jj]
            if twice:
                continue
            ln = e - s + 1
            r = n_runs
            while r > 0:
                l2 = run_len[r - 1]
                if ln < l2:
                    break
                if ln == l2:
                    t2 = _map_sum(amps, cidx, strip_chan, run_start[r - 1], l2)
                    if tot < t2 or (tot == t2 and s > run_start[r - 1]):
                        break
                run_start[r] = run_start[r - 1]
                run_len[r] = l2
                r -= 1
            run_start[r] = s
            run_len[r] = ln
            n_runs += 1
    if twice:  # the greedy search over the segments (not inlined: rare)
        n_runs = _greedy_segments(amps, n, strip_chan, cidx, used, starts, n_seg, run_start, run_len, singles)
    n_singles = 0
    for j in range(n):
        if not used[j]:
            singles[n_singles] = j
            n_singles += 1
    return n_runs, n_singles


@numba.njit(cache=True, **NO_NRT)  # no reference counting: see _NO_NRT
def _greedy_segments(amps, n, strip_chan, cidx, used, starts, n_seg, run_start, run_len, mark):
    """The greedy search of :func:`demux_plane_mask` over the ``n_seg`` segments (first and last
    strip at ``starts[2 i]``, ``starts[2 i + 1]``) found by :func:`demux_plane_mask`: fills
    ``run_start``, ``run_len`` and ``used`` (reset here), returns the number of runs.  ``mark`` (int64,
    >= the segments' strips, at most ``n`` x groups; overwritten): the channel index of each strip of
    the segments, read once.  With at most 64 fired channels the channels taken (by accepted runs) and
    those of the run being extended are bits of two words, so a channel already taken or already in
    the run ends it in one test; a start whose longest possible run is shorter than the best so far is
    not extended.  A plain call, compiled once, for the ~15 % of planes that need it (inlined into
    both specialisations of the hits kernel it added ~2-4 s CPU to the cold compile of
    ``reconstruct``)."""
    if n > 64:
        return _greedy_segments_any(amps, n, strip_chan, cidx, used, starts, n_seg, run_start, run_len, mark)
    m = 0
    for i in range(n_seg):
        for q in range(starts[2 * i], starts[2 * i + 1] + 1):
            mark[m] = cidx[strip_chan[q + 1]]
            m += 1
    one = np.uint64(1)
    taken = np.uint64(0)
    n_runs = 0
    while True:
        best_s = -1
        best_l = 1
        best_a = 0.0
        best_bits = np.uint64(0)
        base = 0
        for i in range(n_seg):
            seg_s = starts[2 * i]
            seg_e = starts[2 * i + 1]
            for w in range(seg_s, seg_e):
                if seg_e - w + 1 < best_l:  # no run from here can be as long as the best: none wins
                    break
                jw = mark[base + w - seg_s]
                bits = one << np.uint64(jw)
                if taken & bits:
                    continue
                e = w
                tot = amps[jw]
                while e < seg_e:
                    o = mark[base + e + 1 - seg_s]
                    b = one << np.uint64(o)
                    if (taken | bits) & b:  # a channel reads one strip of a cluster at most
                        break
                    bits |= b
                    e += 1
                    tot += amps[o]
                ln = e - w + 1
                if ln > best_l or (ln == best_l and ln >= 2 and (tot > best_a or (tot == best_a and w < best_s))):
                    best_s = w
                    best_l = ln
                    best_a = tot
                    best_bits = bits
            base += seg_e - seg_s + 1
        if best_s < 0:
            break
        taken |= best_bits
        run_start[n_runs] = best_s
        run_len[n_runs] = best_l
        n_runs += 1
    for j in range(n):
        used[j] = (taken >> np.uint64(j)) & one
    return n_runs


@numba.njit(cache=True, **NO_NRT)  # no reference counting: see _NO_NRT
def _greedy_segments_any(amps, n, strip_chan, cidx, used, starts, n_seg, run_start, run_len, mark):
    """(:func:`_greedy_segments` for planes of more than 64 fired channels.)  The greedy search of
    :func:`demux_plane_mask` over the ``n_seg`` segments (first and last
    strip at ``starts[2 i]``, ``starts[2 i + 1]``) found by :func:`demux_plane_mask`: fills
    ``run_start``, ``run_len`` and ``used`` (reset here), returns the number of runs.  ``mark``
    (int64, >= n; overwritten) marks the channels of the run being extended, so that a channel
    already in it ends it in one test (the search's own loop over the run's strips, before).  A plain
    call, compiled once, for the ~15 % of planes that need it (inlined into both specialisations
    of the hits kernel it added ~2-4 s CPU to the cold compile of ``reconstruct``)."""
    for j in range(n):
        used[j] = 0
        mark[j] = 0
    n_runs = 0
    while True:
        best_s = -1
        best_l = 1
        best_a = 0.0
        for i in range(n_seg):
            seg_e = starts[2 * i + 1]
            for w in range(starts[2 * i], seg_e):
                if seg_e - w + 1 < best_l:  # no run from here can be as long as the best: none wins
                    break
                jw = cidx[strip_chan[w + 1]]
                if used[jw]:
                    continue
                e = w
                tot = amps[jw]
                mark[jw] = 1
                while e < seg_e:
                    o = cidx[strip_chan[e + 2]]
                    if used[o] or mark[o]:  # a channel reads one strip of a cluster at most
                        break
                    mark[o] = 1
                    e += 1
                    tot += amps[o]
                for q in range(w, e + 1):
                    mark[cidx[strip_chan[q + 1]]] = 0
                ln = e - w + 1
                if ln > best_l or (ln == best_l and ln >= 2 and (tot > best_a or (tot == best_a and w < best_s))):
                    best_s = w
                    best_l = ln
                    best_a = tot
        if best_s < 0:
            break
        for q in range(best_s, best_s + best_l):
            used[cidx[strip_chan[q + 1]]] = 1
        run_start[n_runs] = best_s
        run_len[n_runs] = best_l
        n_runs += 1
    return n_runs


@numba.njit(cache=True, inline="always")
def _map_sum(amps, cidx, strip_chan, s, ln):
    """The summed amplitude of the run of ``ln`` strips from strip ``s``, through the channel map
    (summed from the first strip, as the greedy search sums)."""
    tot = amps[cidx[strip_chan[s + 1]]]
    for q in range(s + 1, s + ln):
        tot += amps[cidx[strip_chan[q + 1]]]
    return tot


def check_table(table) -> str | None:
    """None if every strip of the channel -> strip ``table`` is read by one channel only (what the
    channel map of :func:`demux_plane_mask` needs), else a one-line description of the first strip
    read twice."""
    flat = np.asarray(table).reshape(-1)
    strips, counts = np.unique(flat, return_counts=True)
    if (counts > 1).any():
        s = int(strips[counts > 1][0])
        chans = sorted({int(c) for c in np.nonzero((np.asarray(table) == s).any(axis=1))[0]})
        return f"strip {s} is read by channels {chans}"
    return None


def demux_plane(chans, amps, table, dead):
    """Convenience wrapper of :func:`demux_plane_mask` (its tables built for this call) returning
    ``(clusters as [[(strip, channel index), ...]], unresolved channel indices)``.

    A channel given twice (the hits kernel keeps the first digit of a channel, so only a
    caller of this wrapper can do that) proposes each strip twice, which the channel map cannot
    hold: such input, and a table with a strip read by two channels, go to
    :func:`demux_plane_reference`, which defines the result."""
    chans = np.asarray(chans, np.int64)
    if len(np.unique(chans)) < len(chans) or check_table(table) is not None:
        return demux_plane_reference(chans, amps, table, dead)
    amps = np.asarray(amps, np.float64)
    table = np.asarray(table, np.int64)
    strip_chan = strip_channel_map(table, np.asarray(dead, np.bool_))
    live = candidate_words(strip_chan)
    words = channel_words(table, len(live))
    n, g = len(chans), table.shape[1]
    cidx = np.full(table.shape[0] + 1, -1, np.int64)
    cand = np.zeros(len(live), np.uint64)
    used, starts, rstart, rlen, singles = (np.zeros(n * g + 1, np.int64) for _ in range(5))
    nr, ns = demux_plane_mask(chans, amps, n, words, strip_chan, live, cand, cidx, used, starts, rstart, rlen,
                              singles)
    clusters = [[(int(s), int(cidx[strip_chan[s + 1]])) for s in range(rstart[r], rstart[r] + rlen[r])]
                for r in range(nr)]
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
