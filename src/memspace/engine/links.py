"""The hot tier's links as arrays: one stable integer slot per memory id, pooled neighbour lists.

Why arrays: at 100k memories with about ten auto-links each, a ``target -> Link``
dict per memory plus a reverse index of sets is a million small Python objects:
most of a space's RAM, most of the time a WAL replay or a snapshot restore takes
(building them one by one), and every collection of the cyclic GC walks them.
Here a link costs 16 bytes in three numpy columns, a snapshot holds links as
arrays (restore is a few numpy copies) and a bulk load appends them with a
handful of vectorised operations. :class:`~memspace.engine.model.Link` objects
are built only when a caller asks for one memory's links.

Layout:

* **Slots.** Every id the links involve (a hot memory holding links, or the
  target of one) has a slot: ``slot[id]`` and ``names[slot]``. A slot is stable
  for as long as the id is referenced (hot rows move on deletes; slots do not)
  and is recycled once its id is neither hot (``held``) nor linked to
  (``indegree`` 0). Targets in warm or cold tiers keep a slot while hot memories
  link to them.
* **Out-lists**: per slot, its links in order, as columns ``target`` (int32
  slot), ``weight`` (float64: weights come back exactly as given) and ``kind``
  (int32 code into the ``kinds`` table). The
  order is the one a ``target -> Link`` dict would have: first insertion, a
  replacement keeps its position, a removal closes the gap. One link per
  ordered pair.
* **In-lists** (the reverse index): per slot, the slots linking to it,
  unordered, so forgetting a memory removes the links into it
  in time proportional to their number. It is built on first use (the first
  forget or demotion after a load) from the out-lists: a replay or restore that
  never needs it never pays for it; once built it is kept in step.

Both kinds of list live in a :class:`~memspace.engine.pool.Pool`: shared
column arrays, a list being a block that moves (with twice the room) when it
outgrows it. Appending is amortised O(1); reading a list is a slice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from memspace.engine.model import Link
from memspace.engine.pool import Column, Ints, Pool, ranges
from memspace.errors import InvalidArgument


class LinkGraph:
    """Directed, weighted, typed links held by hot memories (see the module docstring).

    The hot tier is its only writer and says which ids are hot (:meth:`hold`,
    :meth:`release`). Nothing is validated here: ``source`` slots must be held.
    """

    def __init__(self) -> None:
        self.slot: dict[str, int] = {}
        self.names: list[str | None] = []
        self.kinds: list[str] = []
        self.kind_codes: dict[str, int] = {}   # kind -> its code (its index in kinds)
        self.count = 0                         # links held
        self._free: list[int] = []
        self._held = np.zeros(0, np.bool_)
        self._indegree = np.zeros(0, np.int64)
        self._out = Pool((np.int32, np.float64, np.int32), 0)
        self._in: Pool | None = None

    # -- slots --------------------------------------------------------------------------------------

    def intern(self, memory_id: str) -> int:
        """The slot of ``memory_id``, allocated if it has none."""
        s = self.slot.get(memory_id)
        if s is not None:
            return s
        if self._free:
            s = self._free.pop()
            self.names[s] = memory_id
        else:
            s = len(self.names)
            self.names.append(memory_id)
            if s == len(self._held):
                self._grow_slots(max(256, 2 * s))
        self.slot[memory_id] = s
        return s

    def hold(self, memory_id: str) -> int:
        """``memory_id`` became hot (it may hold links): its slot."""
        s = self.intern(memory_id)
        self._held[s] = True
        return s

    def intern_new(self, memory_ids: Sequence[str]) -> list[int]:
        """Slots for distinct ids that have none yet, allocated as ``intern`` would one by one
        (free slots first), the new ones in bulk."""
        out: list[int] = []
        free = self._free
        taken = min(len(free), len(memory_ids))
        for memory_id in memory_ids[:taken]:
            s = free.pop()
            self.names[s] = memory_id
            self.slot[memory_id] = s
            out.append(s)
        rest = memory_ids[taken:]
        if rest:
            s0 = len(self.names)
            self.names.extend(rest)
            if len(self.names) > len(self._held):
                self._grow_slots(max(256, 2 * len(self.names)))
            self.slot.update(zip(rest, range(s0, s0 + len(rest))))
            out.extend(range(s0, s0 + len(rest)))
        return out

    def hold_slots(self, slots: Ints) -> None:
        """The memories in ``slots`` (interned) became hot."""
        self._held[slots] = True

    def release(self, source: int) -> None:
        """``source`` left the hot tier: drop the links it holds. Links into it stay (their
        target is in a lower tier now, or the caller drops them: :meth:`drop_into`)."""
        s, n = self._out.block(source)
        if n:
            targets = self._out.cols[0][s:s + n].tolist()
            self._indegree[targets] -= 1   # a list holds a target at most once
            inbound = self._in
            if inbound is not None:
                for t in targets:
                    inbound.delete(t, inbound.find(t, source), ordered=False)
            self.count -= n
            for t in targets:
                self._maybe_free(t)
        self._out.drop(source)   # its block too: it may stay away (demoted) for good
        self._held[source] = False
        self._maybe_free(source)

    def _maybe_free(self, s: int) -> None:
        if self._held[s] or self._indegree[s] or self.names[s] is None:
            return
        del self.slot[self.names[s]]  # type: ignore[arg-type]
        self.names[s] = None
        self._out.drop(s)
        if self._in is not None:
            self._in.drop(s)
        self._free.append(s)

    def _grow_slots(self, n: int) -> None:
        held = np.zeros(n, np.bool_)
        held[:len(self._held)] = self._held
        self._held = held
        indegree = np.zeros(n, np.int64)
        indegree[:len(self._indegree)] = self._indegree
        self._indegree = indegree
        self._out.resize_keys(n)
        if self._in is not None:
            self._in.resize_keys(n)

    def kind_code(self, kind: str) -> int:
        code = self.kind_codes.get(kind)
        if code is None:
            code = self.kind_codes[kind] = len(self.kinds)
            self.kinds.append(kind)
        return code

    # -- reading ------------------------------------------------------------------------------------

    def targets(self, source: int) -> list[str]:
        s, n = self._out.block(source)
        names = self.names
        return [names[t] for t in self._out.cols[0][s:s + n].tolist()]

    def links(self, source: int) -> tuple[Link, ...]:
        """The links ``source`` holds, in order, as Link objects."""
        s, n = self._out.block(source)
        if n == 0:
            return ()
        names, kinds = self.names, self.kinds
        targets, weights, codes = (col[s:s + n].tolist() for col in self._out.cols)
        return tuple([Link(names[t], w, kinds[k])
                      for t, w, k in zip(targets, weights, codes)])

    def neighbours(self, source: int, elsewhere: Callable[[str], bool]) -> list[tuple[str, float]]:
        """``(target, weight)`` of the links ``source`` holds, in order, keeping targets that are
        hot or for which ``elsewhere(target)`` is true."""
        out = self._out
        s, n = out.start[source], out.length[source]
        if not n:
            return []
        targets = out.cols[0][s:s + n]
        names = self.names
        pairs = list(zip([names[t] for t in targets.tolist()], out.cols[1][s:s + n].tolist()))
        held = self._held[targets]
        if held.all():
            return pairs
        return [(name, w) for (name, w), hot in zip(pairs, held.tolist()) if hot or elsewhere(name)]

    # -- mutation -----------------------------------------------------------------------------------

    def set(self, source: int, target: str, weight: float, kind: str) -> None:
        """Add ``source -> target``, or replace it in place if ``source`` links there already."""
        t = self.intern(target)
        record = (t, weight, self.kind_code(kind))
        if self._indegree[t]:   # else nothing links to it yet, so no search (a new memory's backlinks)
            i = self._out.find(source, t)
            if i >= 0:
                self._out.put(source, i, record)
                return
        self._out.append(source, record)
        self._indegree[t] += 1
        self.count += 1
        if self._in is not None:
            self._in.append(t, (source,))

    def set_all(self, source: int, links: Iterable[Link]) -> None:
        """:meth:`set` for each link in turn; in one step when ``source`` holds none yet (a
        memory just stored or promoted)."""
        if self._out.length[source]:
            for link in links:
                self.set(source, link.target, link.weight, link.kind)
            return
        last = {link.target: link for link in links}   # a target named twice: first position, last link
        if not last:
            return
        intern, kind_code = self.intern, self.kind_code
        targets = [intern(t) for t in last]
        self._out.append_many(source, (targets, [lk.weight for lk in last.values()],
                                       [kind_code(lk.kind) for lk in last.values()]))
        indegree = self._indegree
        for t in targets:
            indegree[t] += 1
        self.count += len(targets)
        if self._in is not None:
            for t in targets:
                self._in.append(t, (source,))

    def set_into(self, target: str, sources: Sequence[tuple[int, float]], kind: str) -> None:
        """:meth:`set` ``(source, target, weight, kind)`` for each ``(source, weight)`` in turn; in
        one step when nothing links to ``target`` yet (the backlinks of a memory just stored)."""
        if not sources:
            return
        t = self.intern(target)
        if self._indegree[t]:
            for source, weight in sources:
                self.set(source, target, weight, kind)
            return
        last = dict(sources)   # a source named twice: one link, the last weight
        code = self.kind_code(kind)
        for source, weight in last.items():
            self._out.append(source, (t, weight, code))
        self._indegree[t] += len(last)
        self.count += len(last)
        if self._in is not None:
            self._in.append_many(t, (list(last),))

    def drop_into(self, target: str) -> None:
        """Remove every link into ``target`` (it was forgotten)."""
        t = self.slot.get(target)
        if t is None or not self._indegree[t]:
            return
        inbound = self._inbound()
        s, n = inbound.block(t)
        for source in inbound.cols[0][s:s + n].tolist():
            self._out.delete(source, self._out.find(source, t), ordered=True)
        inbound.clear(t)
        self._indegree[t] = 0
        self.count -= n
        self._maybe_free(t)

    def add_new(self, sources: Ints, targets: Ints, weights: Column, kinds: Column) -> None:
        """Append links in bulk: link ``i`` goes to the end of ``sources[i]``'s list, in order.

        Every source must be held, and no ``(source, target)`` pair may be held already or
        appear twice: this is :meth:`set` for links known to be new, without the lookups.
        """
        if not len(sources):
            return
        order = np.argsort(sources, kind="stable")
        self._out.extend(sources[order], (targets[order], weights[order], kinds[order]))
        self._indegree += np.bincount(targets, minlength=len(self._indegree))
        self.count += len(sources)
        if self._in is not None:
            order = np.argsort(targets, kind="stable")
            self._in.extend(targets[order], (sources[order],))

    def _inbound(self) -> Pool:
        """The reverse index, built from the out-lists on first use."""
        if self._in is None:
            n = len(self._held)
            counts = self._out.length
            sources = np.repeat(np.arange(n, dtype=np.int64), counts)
            targets = self._out.cols[0][ranges(self._out.start, counts)].astype(np.int64)
            order = np.argsort(targets, kind="stable")
            self._in = Pool((np.int32,), n)
            self._in.extend(targets[order], (sources[order],))
        return self._in

    # -- snapshots ------------------------------------------------------------------------------------

    def export(self, rows: Ints) -> tuple[dict[str, Column], dict[str, Any]]:
        """The links of the held slots ``rows`` (in row order) as snapshot arrays and meta.

        Canonical, so equal link states give equal snapshots however they were reached:
        targets are numbered by row, then targets that are not rows in order of first
        appearance (their ids in ``link_names``); kinds likewise (``link_kinds``).
        """
        counts, (targets, weights, codes) = self._out.gather(rows)
        number = np.full(len(self._held), -1, np.int64)
        number[rows] = np.arange(len(rows))
        canon = number[targets]
        extra = np.flatnonzero(canon < 0)
        names: list[str | None] = []
        if len(extra):
            slots, first = np.unique(targets[extra], return_index=True)
            slots = slots[np.argsort(first)]
            number[slots] = len(rows) + np.arange(len(slots))
            canon = number[targets]
            names = [self.names[s] for s in slots.tolist()]
        used, first = np.unique(codes, return_index=True)
        used = used[np.argsort(first)]
        renumber = np.zeros(len(self.kinds), np.int32)
        renumber[used] = np.arange(len(used), dtype=np.int32)
        arrays = {"link_counts": counts.astype(np.int32), "link_targets": canon.astype(np.int32),
                  "link_weights": weights, "link_kinds": renumber[codes]}
        return arrays, {"link_names": names, "link_kinds": [self.kinds[k] for k in used.tolist()]}

    def load(self, ids: Sequence[str], extra: Sequence[str], counts: Ints, targets: Ints,
             weights: Column, kinds: Column, kind_names: Sequence[str]) -> None:
        """Fill an empty graph from :meth:`export`'s output: ``ids`` are held (slots 0..n-1,
        the rows), ``extra`` the other targets. The caller has checked that the arrays fit."""
        assert not self.slot, "load needs an empty graph"
        names = [*ids, *extra]
        self._grow_slots(max(256, len(names)))
        self.names = list(names)
        self.slot = dict(zip(names, range(len(names))))
        self._held[:len(ids)] = True
        self.kinds = list(kind_names)
        self.kind_codes = {k: i for i, k in enumerate(self.kinds)}
        full = np.zeros(len(self._held), np.int64)
        full[:len(counts)] = counts
        self._out.load(full, (targets, weights, kinds))
        self._indegree[:] = np.bincount(targets, minlength=len(self._held))
        self.count = len(targets)

    def check(self) -> None:
        """Assert the invariants (tests): counts, in-degrees, the reverse index, free slots."""
        n = len(self._held)
        live = [s for s, name in enumerate(self.names) if name is not None]
        assert self.slot == {self.names[s]: s for s in live}
        lengths = self._out.length
        assert int(lengths.sum()) == self.count
        assert not lengths[~self._held].any(), "only hot memories hold links"
        targets = self._out.cols[0][ranges(self._out.start, lengths)]
        assert np.array_equal(np.bincount(targets, minlength=n), self._indegree)
        for s in live:
            assert self._held[s] or self._indegree[s], f"slot {s} is referenced by nothing"
            start, k = self._out.block(s)
            assert len(set(self._out.cols[0][start:start + k].tolist())) == k, "one link per pair"
        if self._in is not None:
            for s in live:
                start, k = self._in.block(s)
                got = sorted(self._in.cols[0][start:start + k].tolist())
                want = sorted(src for src in live if self._out.find(src, s) >= 0)
                assert got == want, f"reverse index of slot {s}"


# -- snapshots -------------------------------------------------------------------------------------

LinkArrays = tuple[list[str], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64],
                   npt.NDArray[np.int32], list[str]]


def links_from_arrays(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], ids: list[str]) -> LinkArrays:
    """The ``LinkGraph.load`` arguments after ``ids`` from a snapshot's link arrays, checked."""
    extra, kinds = list(meta["link_names"]), list(meta["link_kinds"])
    counts = np.asarray(arrays["link_counts"], dtype=np.int64)
    targets = np.asarray(arrays["link_targets"], dtype=np.int64)
    weights = np.asarray(arrays["link_weights"], dtype=np.float64)
    codes = np.asarray(arrays["link_kinds"], dtype=np.int32)
    total = len(targets)
    if (len(counts) != len(ids) or int(counts.sum()) != total or len(weights) != total or len(codes) != total
            or (total and (counts.min() < 0 or targets.min() < 0 or targets.max() >= len(ids) + len(extra)
                           or codes.min() < 0 or codes.max() >= len(kinds)))):
        raise InvalidArgument(f"snapshot links do not fit its {len(ids)} ids", {"field": "snapshot"})
    return extra, counts, targets, weights, codes, kinds


def links_from_v1(meta: Mapping[str, Any], ids: list[str]) -> LinkArrays:
    """The same from a version 1 snapshot: per row a list of ``[target, weight, kind]``."""
    rows = meta["links"][:len(ids)]
    if len(rows) < len(ids):
        raise InvalidArgument(f"snapshot has {len(ids)} ids but shorter columns", {"field": "snapshot"})
    number = {memory_id: i for i, memory_id in enumerate(ids)}
    extra: list[str] = []
    kind_code: dict[str, int] = {}
    targets: list[int] = []
    weights: list[float] = []
    codes: list[int] = []
    for row in rows:
        for target, weight, kind in row:
            t = number.get(target)
            if t is None:
                t = number[target] = len(ids) + len(extra)
                extra.append(target)
            targets.append(t)
            weights.append(weight)
            codes.append(kind_code.setdefault(kind, len(kind_code)))
    counts = np.array([len(row) for row in rows], dtype=np.int64)
    return (extra, counts, np.array(targets, dtype=np.int64), np.array(weights, dtype=np.float64),
            np.array(codes, dtype=np.int32), list(kind_code))
