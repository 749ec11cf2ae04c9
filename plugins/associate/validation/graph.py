"""Parent-link graphs as integer arrays (parent position or -1): cycles and descendants, in numpy."""

from __future__ import annotations

import numpy as np


def parent_positions(keys, parent_keys) -> np.ndarray:
    """Position of each row's parent among ``keys`` (first occurrence), -1 if none or unknown."""
    import pandas as pd

    keys = pd.Series(keys, dtype=object).to_numpy(dtype=object)
    parent_keys = pd.Series(parent_keys, dtype=object).to_numpy(dtype=object)
    # One factorize over keys and parents gives both a shared integer code (missing: -1);
    # twice as fast at 1M rows as mapping the parent keys through an index of the keys.
    codes, uniques = pd.factorize(np.concatenate([keys, parent_keys]))
    key_codes, parent_codes = codes[:len(keys)], codes[len(keys):]
    present = np.flatnonzero(key_codes >= 0)
    known, first = np.unique(key_codes[present], return_index=True)
    position_of = np.full(len(uniques), -1, dtype=np.int64)
    position_of[known] = present[first]
    return np.where(parent_codes >= 0, position_of[np.maximum(parent_codes, 0)], -1).astype(np.int64)


def on_cycle(parent: np.ndarray) -> np.ndarray:
    """Rows that lie on a parent cycle (self-parent included); rows merely leading into one do not."""
    n = len(parent)
    has_parent = parent >= 0
    indegree = np.bincount(parent[has_parent], minlength=n)
    alive = np.ones(n, dtype=bool)
    frontier = np.flatnonzero(indegree == 0)
    # Peel leaves: in a graph where each node has at most one parent, what survives is the cycles.
    while frontier.size:
        alive[frontier] = False
        ups = parent[frontier]
        ups = ups[ups >= 0]
        if not ups.size:
            break
        np.subtract.at(indegree, ups, 1)
        ups = np.unique(ups)
        frontier = ups[(indegree[ups] == 0) & alive[ups]]
    return alive


class _Children:
    """The children of any set of rows, found by binary search in the rows sorted by parent."""

    def __init__(self, parent: np.ndarray):
        self.order = np.argsort(parent, kind="stable")
        self.sorted_parents = parent[self.order]

    def of(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every child of ``rows`` and, for each, the row of ``rows`` it is a child of."""
        lo = np.searchsorted(self.sorted_parents, rows, side="left")
        hi = np.searchsorted(self.sorted_parents, rows, side="right")
        counts = hi - lo
        total = int(counts.sum())
        starts = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(total)
        return self.order[starts], np.repeat(rows, counts)


def descendants(parent: np.ndarray, seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows below any seed row (children, grandchildren, ...) and, for each, the seed it hangs under."""
    n = len(parent)
    children_of = _Children(parent)
    reached = np.zeros(n, dtype=bool)
    root = np.full(n, -1, dtype=np.int64)
    frontier = np.flatnonzero(seeds)
    root[frontier] = frontier
    while frontier.size:
        children, via = children_of.of(frontier)
        fresh = ~reached[children] & ~seeds[children]
        children, via = children[fresh], via[fresh]
        children, first = np.unique(children, return_index=True)
        reached[children] = True
        root[children] = root[via[first]]
        frontier = children
    return reached, root


def depths(parent: np.ndarray) -> np.ndarray:
    """Each row's distance from the top of its parent chain (top = 0); -1 on or below a cycle."""
    depth = np.full(len(parent), -1, dtype=np.int64)
    children_of = _Children(parent)
    frontier = np.flatnonzero(parent < 0)
    level = 0
    # Top-down, one level at a time: a row is reached only from a reached parent, so rows on
    # (or hanging from) a cycle are never reached.
    while frontier.size:
        depth[frontier] = level
        frontier, _ = children_of.of(frontier)
        level += 1
    return depth
