"""Variable-length lists of fixed-size records, one per integer key, in pooled numpy columns.

The storage under :mod:`.links`: a list is a block ``[start, start + length)``
of the shared columns with room for ``capacity`` records. A list that outgrows
its block moves to the end of the pool with twice the room (so appending is
amortised O(1)); the block it leaves is a hole. When a move finds no room the
pool is compacted (holes squeezed out, every list keeping its room) if holes
are at least half of it, and grown (doubled) otherwise, so holes never take
more than about as much as the lists themselves. Reading a list is a slice;
bulk operations (:meth:`Pool.extend`, :meth:`Pool.gather`, :meth:`Pool.load`)
are a few vectorised numpy operations whatever the number of lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Ints = npt.NDArray[np.int64]
Column = npt.NDArray[Any]

_MIN_POOL = 1024
_MIN_BLOCK = 4


def ranges(starts: Ints, counts: Ints) -> Ints:
    """The concatenation of ``arange(s, s + c)`` for each ``(s, c)``, in order."""
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, np.int64)
    return np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(total, dtype=np.int64)


def _groups(keys: Ints) -> tuple[Ints, Ints, Ints]:
    """For keys sorted so that equal keys are adjacent: ``(keys, first index, count)`` per group."""
    head = np.empty(len(keys), np.bool_)
    head[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=head[1:])
    first = np.flatnonzero(head)
    counts = np.diff(np.append(first, len(keys)))
    return keys[first], first, counts


class Pool:
    """Variable-length lists of fixed-size records, one per integer key, in pooled columns.

    Column 0 is what :meth:`find` searches. No bounds or consistency checks: the
    owner (:class:`LinkGraph`) keeps keys in range and lists as it wants them.
    """

    def __init__(self, dtypes: Sequence[npt.DTypeLike], keys: int) -> None:
        self.cols: list[Column] = [np.empty(_MIN_POOL, dt) for dt in dtypes]
        self.start = np.zeros(keys, np.int64)
        self.length = np.zeros(keys, np.int64)
        self.cap = np.zeros(keys, np.int64)
        self.end = 0        # positions in use: blocks and holes
        self.reserved = 0   # sum of the blocks' capacities; end - reserved are holes

    def resize_keys(self, n: int) -> None:
        for name in ("start", "length", "cap"):
            old = getattr(self, name)
            new = np.zeros(n, np.int64)
            new[:len(old)] = old
            setattr(self, name, new)

    def block(self, key: int) -> tuple[int, int]:
        return int(self.start[key]), int(self.length[key])

    def find(self, key: int, value: int) -> int:
        """Position of ``value`` in ``key``'s list (column 0), or -1."""
        s, n = self.start[key], self.length[key]
        if not n:
            return -1
        try:  # for lists of a few hundred at most, cheaper than a numpy comparison
            return self.cols[0][s:s + n].tolist().index(value)  # type: ignore[no-any-return]
        except ValueError:
            return -1

    def put(self, key: int, i: int, values: Sequence[Any]) -> None:
        at = int(self.start[key]) + i
        for col, v in zip(self.cols, values):
            col[at] = v

    def append(self, key: int, values: Sequence[Any]) -> None:
        n = int(self.length[key])
        self._room(key, n + 1)
        at = int(self.start[key]) + n
        for col, v in zip(self.cols, values):
            col[at] = v
        self.length[key] = n + 1

    def append_many(self, key: int, values: Sequence[Sequence[Any]]) -> None:
        """Append ``len(values[0])`` records to ``key``'s list: ``values`` are columns."""
        k = len(values[0])
        n = int(self.length[key])
        self._room(key, n + k)
        at = int(self.start[key]) + n
        for col, v in zip(self.cols, values):
            col[at:at + k] = v
        self.length[key] = n + k

    def _room(self, key: int, needed: int) -> None:
        """Make ``key``'s block hold ``needed`` records, moving it to a block twice as large."""
        n, c = int(self.length[key]), int(self.cap[key])
        if needed <= c:
            return
        grown = max(_MIN_BLOCK, 2 * c, needed)
        self._reserve(grown)  # may compact: read the block only after this
        s = int(self.start[key])
        for col in self.cols:
            col[self.end:self.end + n] = col[s:s + n]
        self.start[key] = self.end
        self.cap[key] = grown
        self.end += grown
        self.reserved += grown - c

    def delete(self, key: int, i: int, *, ordered: bool) -> None:
        """Remove the record at position ``i``: closing the gap (``ordered``) or moving the last
        record into it."""
        s, n = self.block(key)
        for col in self.cols:
            if ordered:
                col[s + i:s + n - 1] = col[s + i + 1:s + n]
            else:
                col[s + i] = col[s + n - 1]
        self.length[key] = n - 1

    def clear(self, key: int) -> None:
        """Empty the list, keeping its block for reuse."""
        self.length[key] = 0

    def drop(self, key: int) -> None:
        """Empty the list and give its block back (it becomes a hole)."""
        self.reserved -= int(self.cap[key])
        self.length[key] = self.cap[key] = 0

    def extend(self, keys: Ints, values: Sequence[Column]) -> None:
        """Append ``values[j][i]`` to the list of ``keys[i]``, in order. Equal keys must be adjacent."""
        if not len(keys):
            return
        uk, first, counts = _groups(keys)
        need = self.length[uk] + counts
        # An upper bound of the room the moves below take; reserving may compact (and move blocks),
        # so the blocks are read only after it.
        self._reserve(int(np.maximum(np.maximum(need, 2 * self.cap[uk]), _MIN_BLOCK).sum()))
        old_len, old_cap = self.length[uk], self.cap[uk]
        moving = need > old_cap
        if moving.any():
            mk = uk[moving]
            grown = np.maximum(np.maximum(need[moving], 2 * old_cap[moving]), _MIN_BLOCK)
            new_start = self.end + np.cumsum(grown) - grown
            src = ranges(self.start[mk], old_len[moving])
            dst = ranges(new_start, old_len[moving])
            for col in self.cols:
                col[dst] = col[src]
            self.start[mk] = new_start
            self.cap[mk] = grown
            self.end += int(grown.sum())
            self.reserved += int(grown.sum() - old_cap[moving].sum())
        at = np.repeat(self.start[uk] + old_len - first, counts) + np.arange(len(keys), dtype=np.int64)
        for col, v in zip(self.cols, values):
            col[at] = v
        self.length[uk] = need

    def load(self, counts: Ints, values: Sequence[Column]) -> None:
        """Replace every list: key ``k`` gets the next ``counts[k]`` records of ``values``."""
        total = int(counts.sum())
        self.cols = [np.empty(max(total, _MIN_POOL), col.dtype) for col in self.cols]
        for col, v in zip(self.cols, values):
            col[:total] = v
        self.length[:] = 0
        self.length[:len(counts)] = counts
        self.cap[:] = self.length
        self.start[:] = np.cumsum(self.cap) - self.cap
        self.end = self.reserved = total

    def gather(self, keys: Ints) -> tuple[Ints, list[Column]]:
        """The lists of ``keys`` concatenated in key order: ``(lengths, columns)`` (copies)."""
        counts = self.length[keys]
        at = ranges(self.start[keys], counts)
        return counts, [col[at] for col in self.cols]

    def _reserve(self, extra: int) -> None:
        """Make room for ``extra`` records at the end: compact if holes are at least half the
        pool, then grow (doubling) if that is not enough."""
        size = len(self.cols[0])
        if self.end + extra <= size:
            return
        if 2 * (self.end - self.reserved) >= size:
            self._compact()
        if self.end + extra > size:
            size = max(2 * size, self.end + extra)
            for i, col in enumerate(self.cols):
                new = np.empty(size, col.dtype)
                new[:self.end] = col[:self.end]
                self.cols[i] = new

    def _compact(self) -> None:
        """Squeeze the holes out: blocks keep their capacity (so lists still have room to grow),
        empty lists give theirs back."""
        self.cap[self.length == 0] = 0
        keys = np.flatnonzero(self.cap)
        caps = self.cap[keys]
        new_start = np.cumsum(caps) - caps
        src = ranges(self.start[keys], self.length[keys])
        dst = ranges(new_start, self.length[keys])
        for i, col in enumerate(self.cols):
            new = np.empty(len(col), col.dtype)
            new[dst] = col[src]
            self.cols[i] = new
        self.start[keys] = new_start
        self.end = self.reserved = int(caps.sum())
