"""Grouping joint candidates into people, compiled (numba): what remains of bottom-up decoding
outside the exported graph (equal peaks, grouping, refinement of missing joints, sub-pixel
peaks), at a fraction of the network's time.

HigherHRNet's greedy-by-joint grouping: joint types in the spec's order, each one an optimal
assignment of its candidates to the people found so far (cost: rounded tag distance, ties broken
by score), the candidates left over starting new people. Interpreted, the per-joint loop and
SciPy's assignment cost milliseconds of call overhead for a handful of candidates; here the whole
walk is one compiled call. ``assign`` is SciPy's ``linear_sum_assignment`` algorithm (Crouse's
shortest augmenting path) step for step, so that ties resolve the same way.
"""
from __future__ import annotations

import numba
import numpy as np

BLOCK = 8  # refinement searches a joint's map block by block, the blocks of highest heat first


@numba.njit(cache=True)
def assign(cost: np.ndarray) -> np.ndarray:
    """The column of each row in a minimum-cost assignment of a (rows <= columns) cost matrix,
    as ``scipy.optimize.linear_sum_assignment`` chooses it, ties included."""
    nr, nc = cost.shape
    u, v = np.zeros(nr), np.zeros(nc)
    shortest = np.empty(nc)
    path = np.full(nc, -1)
    col4row, row4col = np.full(nr, -1), np.full(nc, -1)
    seen_rows, seen_cols = np.zeros(nr, np.bool_), np.zeros(nc, np.bool_)
    remaining = np.empty(nc, np.int64)
    for row in range(nr):
        for it in range(nc):  # reversed: a constant matrix gives the identity, as in SciPy
            remaining[it] = nc - it - 1
        seen_rows[:] = False
        seen_cols[:] = False
        shortest[:] = np.inf
        left, i, sink, low = nc, row, -1, 0.0
        while sink == -1:  # the shortest augmenting path from ``row``
            index, lowest = -1, np.inf
            seen_rows[i] = True
            for it in range(left):
                j = remaining[it]
                r = low + cost[i, j] - u[i] - v[j]
                if r < shortest[j]:
                    path[j], shortest[j] = i, r
                if shortest[j] < lowest or (shortest[j] == lowest and row4col[j] == -1):
                    lowest, index = shortest[j], it
            low = lowest
            j = remaining[index]
            if row4col[j] == -1:
                sink = j
            else:
                i = row4col[j]
            seen_cols[j] = True
            left -= 1
            remaining[index] = remaining[left]
        u[row] += low
        for i in range(nr):
            if seen_rows[i] and i != row:
                u[i] += low - shortest[col4row[i]]
        for j in range(nc):
            if seen_cols[j]:
                v[j] -= low - shortest[j]
        j = sink
        while True:  # augment along the path
            i = path[j]
            row4col[j] = i
            col4row[i], j = j, col4row[i]
            if i == row:
                break
    return col4row


@numba.njit(cache=True)
def drop_equal_peaks(joints: np.ndarray, radius: int) -> np.ndarray:
    """``joints`` (K, M, 3) with the score zeroed of every candidate that has an equal, earlier
    (raster order) candidate of its joint within ``radius``: of two equal peaks one survives."""
    out = joints.copy()
    for k in range(joints.shape[0]):
        for j in range(joints.shape[1]):
            xj, yj, sj = joints[k, j, 0], joints[k, j, 1], joints[k, j, 2]
            for i in range(joints.shape[1]):
                xi, yi, si = joints[k, i, 0], joints[k, i, 1], joints[k, i, 2]
                if (si == sj and si > 0 and abs(xi - xj) <= radius and abs(yi - yj) <= radius
                        and yi * 1e6 + xi < yj * 1e6 + xj):
                    out[k, j, 2] = 0
                    break
    return out


@numba.njit(cache=True)
def match(joints: np.ndarray, tags: np.ndarray, order: np.ndarray, detection_threshold: float,
          tag_threshold: float, max_people: int, use_detection_val: bool) -> np.ndarray:
    """People (P, K, 3 + D) x, y, score and tag of each joint, from the candidates ``joints``
    (K, M, 3) and their ``tags`` (K, M, D), joint types taken in ``order``."""
    k_total, m, d = tags.shape
    most = 0
    for k in range(k_total):
        for j in range(m):
            if joints[k, j, 2] > detection_threshold:
                most += 1
    people = np.zeros((most, k_total, 3 + d), np.float32)
    tag_sums, counts, found = np.zeros((most, d)), np.zeros(most), 0
    cand = np.empty((m, 3 + d), np.float32)
    for k in order:
        n = 0
        for j in range(m):
            if joints[k, j, 2] > detection_threshold:
                cand[n, :3] = joints[k, j]
                cand[n, 3:] = tags[k, j]
                n += 1
        if n == 0:
            continue
        grouped = min(found, max_people)
        col = np.full(n, grouped)  # a column >= grouped: not joined
        if grouped:
            diff = np.empty((n, grouped))
            cost = np.full((n, max(n, grouped)), 1e10)
            for r in range(n):
                for p in range(grouped):
                    squares = 0.0
                    for t in range(d):
                        squares += (cand[r, 3 + t] - tag_sums[p, t] / counts[p]) ** 2
                    diff[r, p] = np.sqrt(squares)
                    cost[r, p] = np.rint(diff[r, p]) * 100 - cand[r, 2] if use_detection_val else diff[r, p]
            col = assign(cost)
            for r in range(n):
                p = col[r]
                if p < grouped and diff[r, p] < tag_threshold:
                    people[p, k] = cand[r]
                    tag_sums[p] += cand[r, 3:]
                    counts[p] += 1
                else:
                    col[r] = grouped
        for r in range(n):
            if col[r] == grouped:
                people[found, k] = cand[r]
                tag_sums[found] = cand[r, 3:]
                counts[found] = 1
                found += 1
    return people[:found]


@numba.njit(cache=True)
def _offset(centre: np.float32, low: np.float32, high: np.float32) -> np.float32:
    """The vertex of the parabola through three log-heatmap values one pixel apart."""
    curvature = np.float32(2) * centre - low - high
    if curvature > np.float32(1e-6):
        return min(max((high - low) / (np.float32(2) * curvature), np.float32(-0.5)), np.float32(0.5))
    return np.float32(0)


@numba.njit(cache=True)
def subpixel(heat: np.ndarray, people: np.ndarray) -> np.ndarray:
    """People (P, K, 3) with each joint moved from its integer peak on ``heat`` (K, H, W) by a
    parabola through the log-heatmap (exact for a Gaussian peak)."""
    _, h, w = heat.shape
    out = np.empty((people.shape[0], people.shape[1], 3), np.float32)
    floor = np.float32(1e-10)
    for p in range(people.shape[0]):
        for k in range(people.shape[1]):
            x, y = people[p, k, 0], people[p, k, 1]
            xi, yi = int(x), int(y)
            centre = np.log(max(heat[k, yi, xi], floor))
            left = np.log(max(heat[k, yi, max(xi - 1, 0)], floor))
            right = np.log(max(heat[k, yi, min(xi + 1, w - 1)], floor))
            up = np.log(max(heat[k, max(yi - 1, 0), xi], floor))
            down = np.log(max(heat[k, min(yi + 1, h - 1), xi], floor))
            out[p, k, 0] = x + _offset(centre, left, right)
            out[p, k, 1] = y + _offset(centre, up, down)
            out[p, k, 2] = people[p, k, 2]
    return out


@numba.njit(cache=True)
def _sources(coarse: int, fine: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For every pixel along one axis of a map resized from ``coarse`` to ``fine`` pixels, its two
    source pixels and their weights, as ``F.interpolate`` (bilinear, half-pixel centres) takes them."""
    low, high = np.empty(fine, np.int64), np.empty(fine, np.int64)
    low_weight, high_weight = np.empty(fine, np.float32), np.empty(fine, np.float32)
    scale = np.float32(coarse / fine)
    for i in range(fine):
        src = max((np.float32(i) + np.float32(0.5)) * scale - np.float32(0.5), np.float32(0))
        low[i] = int(src)
        high[i] = min(low[i] + 1, coarse - 1)
        high_weight[i] = src - np.float32(low[i])
        low_weight[i] = np.float32(1) - high_weight[i]
    return low, high, low_weight, high_weight


@numba.njit(cache=True)
def _tag(tags: np.ndarray, k: int, t: int, y: int, x: int, y_sources: tuple, x_sources: tuple) -> np.float32:
    """Joint ``k``'s tag ``t`` at fine pixel (``y``, ``x``) as ``F.interpolate`` resizes the
    coarse map there (bilinear, half-pixel centres: along rows, then along columns)."""
    y0, y1, wy0, wy1 = y_sources
    x0, x1, wx0, wx1 = x_sources
    above = wx0[x] * tags[k, y0[y], x0[x], t] + wx1[x] * tags[k, y0[y], x1[x], t]
    below = wx0[x] * tags[k, y1[y], x0[x], t] + wx1[x] * tags[k, y1[y], x1[x], t]
    return wy0[y] * above + wy1[y] * below


@numba.njit(cache=True, fastmath=True)  # min and max only, of finite values: exact
def _block_ranges(heat: np.ndarray, tags: np.ndarray, k: int, y_sources: tuple, x_sources: tuple,
                  tops: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
    """Per ``BLOCK``-square block of joint ``k``'s heatmap (H, W): its highest heat, and bounds of
    its resized tags read off the coarse pixels they are weighed from (a resized tag lies between
    its sources), so that no tag map is resized whole. Both are read row by row (the tag bounds
    first along each coarse row, then across rows): a block-by-block walk cost three times as much."""
    height, width = heat.shape
    blocks_y, blocks_x = -(-height // BLOCK), -(-width // BLOCK)
    tops[:] = -np.inf
    for y in range(height):
        row = (y // BLOCK) * blocks_x
        for x in range(width):
            tops[row + x // BLOCK] = max(tops[row + x // BLOCK], heat[y, x])
    row_low = np.empty((tags.shape[1], blocks_x), np.float32)
    row_high = np.empty((tags.shape[1], blocks_x), np.float32)
    for t in range(tags.shape[3]):
        for j in range(blocks_x):  # the coarse columns that block column j's pixels are weighed from
            first, last = x_sources[0][j * BLOCK], x_sources[1][min((j + 1) * BLOCK, width) - 1]
            for r in range(tags.shape[1]):
                lo, hi = np.inf, -np.inf
                for c in range(first, last + 1):
                    lo, hi = min(lo, tags[k, r, c, t]), max(hi, tags[k, r, c, t])
                row_low[r, j], row_high[r, j] = lo, hi
        for i in range(blocks_y):
            first, last = y_sources[0][i * BLOCK], y_sources[1][min((i + 1) * BLOCK, height) - 1]
            for j in range(blocks_x):
                lo, hi = np.inf, -np.inf
                for r in range(first, last + 1):
                    lo, hi = min(lo, row_low[r, j]), max(hi, row_high[r, j])
                low[i * blocks_x + j, t], high[i * blocks_x + j, t] = lo, hi


@numba.njit(cache=True)
def refine(heat: np.ndarray, tags: np.ndarray, people: np.ndarray) -> np.ndarray:
    """Each person's missing joints filled at the best place of the joint's map close in tag
    (HigherHRNet): the first maximum of heat - round(|tag - the person's mean tag|) in raster order.

    Tags (K, h, w, D) at the network's coarser resolution are resized here, at the pixels read
    only. The map is searched in blocks of ``BLOCK`` pixels, highest heat first; a block is skipped
    when its highest heat less the rounded distance of its nearest tag is below the best score so
    far, and the search ends at the first block whose highest heat is: the same answer, most of
    the map unread."""
    out = people.copy()
    k_total, height, width = heat.shape
    h, w, d = tags.shape[1], tags.shape[2], tags.shape[3]
    mean = np.zeros((people.shape[0], d), np.float32)
    for p in range(people.shape[0]):
        found = 0
        for k in range(k_total):
            if people[p, k, 2] > 0:
                mean[p] += people[p, k, 3:]
                found += 1
        mean[p] /= np.float32(max(found, 1))
    y_sources, x_sources = _sources(h, height), _sources(w, width)
    blocks_x = -(-width // BLOCK)
    blocks = -(-height // BLOCK) * blocks_x
    tops, low, high = np.empty(blocks, np.float32), np.empty((blocks, d), np.float32), np.empty((blocks, d), np.float32)
    for k in range(k_total):
        missing = np.nonzero(people[:, k, 2] <= 0)[0]
        if len(missing) == 0:
            continue
        _block_ranges(heat[k], tags, k, y_sources, x_sources, tops, low, high)
        order = np.argsort(-tops, kind="mergesort")  # stable: of equal blocks the first in raster order (wins ties)
        for p in missing:
            best, first = -np.inf, height * width
            for b in order:
                if tops[b] < best:
                    break
                squares = np.float32(0)  # the nearest the block's tags come to the person's
                for t in range(d):
                    gap = max(np.float32(0), low[b, t] - mean[p, t], mean[p, t] - high[b, t])
                    squares += gap * gap
                bound = tops[b] - np.rint(np.sqrt(squares))
                top, left = (b // blocks_x) * BLOCK, (b % blocks_x) * BLOCK
                if bound < best or (bound == best and top * width + left > first):  # it cannot win, nor a tie
                    continue
                for y in range(top, min(top + BLOCK, height)):
                    for x in range(left, min(left + BLOCK, width)):
                        if heat[k, y, x] < best:
                            continue
                        if d == 1:  # as the reference: |tag - mean| without a square root
                            distance = abs(_tag(tags, k, 0, y, x, y_sources, x_sources) - mean[p, 0])
                        else:
                            squares = np.float32(0)
                            for t in range(d):
                                gap = _tag(tags, k, t, y, x, y_sources, x_sources) - mean[p, t]
                                squares += gap * gap
                            distance = np.sqrt(squares)
                        score, index = heat[k, y, x] - np.rint(distance), y * width + x
                        if score > best or (score == best and index < first):
                            best, first = score, index
            by, bx = first // width, first % width
            out[p, k, 0], out[p, k, 1], out[p, k, 2] = bx, by, heat[k, by, bx]
    return out
