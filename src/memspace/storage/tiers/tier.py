"""The tier over a directory of segments, and compaction: the contract of both file-backed tiers.

The warm and cold tiers (:class:`WarmTier`, :class:`ColdTier`) implement
:class:`memspace.engine.tiers.TierStore` over immutable *segment files* in
one directory (``<space>/warm/`` or ``<space>/cold/``):

* ``add(memories)`` writes one NEW segment (tmp file, fsync, rename, fsync
  directory) and returns only when it is durable. Nothing is ever written in
  place.
* ``discard(id)`` only marks a tombstone in RAM; ``state()`` returns the
  manifest ``{"tier", "format", "dimension", "segments": [{"name", "count",
  "bytes"}], "tombstones": [[segment, id], ...]}`` that the space stores in
  its snapshot. Tombstones name the segment because an id may be discarded
  from an old segment and live again in a newer one.
* ``open(directory, manifest)`` loads exactly the manifest's segments (in
  its order, which is add order), applies its tombstones, and deletes (and
  logs) this tier's segment files that no manifest references: orphans of a
  crash between writing a segment and writing the snapshot. Segments named by
  the ``keep`` manifests (an older snapshot kept as a fallback) are spared.
* Compaction (on ``add`` or :meth:`compact`) rewrites each segment whose live
  fraction is below ``min_live_fraction`` and merges runs of adjacent small
  segments (fewer than ``merge_below`` live rows, up to ``merge_max`` rows per
  result) so that many small demotions do not become many open files. The
  replaced files are NOT deleted at once: the snapshot on disk still names
  them until the space writes one with the new manifest. They are deleted by
  :meth:`collect` (call it once that snapshot is durable) or by the next
  ``open``.
* A segment the manifest names that is missing, truncated or fails a checksum
  raises :class:`~memspace.errors.StorageError` naming the file; damage found
  later (a warm record or a cold block read on demand) raises the same.

Not thread-safe: a space's worker owns its tiers. A tier is unusable after
:meth:`close`.

The segment formats are in :mod:`.segment`, :mod:`.warm` and :mod:`.cold`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from memspace.engine.model import Link, Memory, Vector
from memspace.errors import InvalidArgument, StorageError
from memspace.storage.tiers.cold import ColdSegment
from memspace.storage.tiers.segment import (
    FORMAT,
    NO_LINKS,
    Floats,
    Segment,
    corrupt,
    fsync_dir,
    to_memory,
)
from memspace.storage.tiers.warm import WarmSegment

log = logging.getLogger(__name__)


def plan_compaction(segments: Sequence[tuple[int, int]], *, min_live_fraction: float = 0.5,
                    merge_below: int = 1024, merge_max: int = 65536) -> list[tuple[int, int]]:
    """Which runs ``[start, end)`` of segments ``(live, total)`` to rewrite, each into one segment.

    A segment is *sparse* when ``live < min_live_fraction * total`` and *small*
    when ``live < merge_below``. Adjacent sparse-or-small segments are grouped
    (up to ``merge_max`` live rows, a lone segment may exceed it); a group is
    rewritten if it holds a sparse segment or at least two segments.
    """
    def candidate(i: int) -> bool:
        live, total = segments[i]
        return live < min_live_fraction * total or live < merge_below

    plan: list[tuple[int, int]] = []
    i, n = 0, len(segments)
    while i < n:
        if not candidate(i):
            i += 1
            continue
        j, rows = i, 0
        while j < n and candidate(j) and (j == i or rows + segments[j][0] <= merge_max):
            rows += segments[j][0]
            j += 1
        if j - i >= 2 or any(segments[s][0] < min_live_fraction * segments[s][1] for s in range(i, j)):
            plan.append((i, j))
        i = j
    return plan


# -- tiers ----------------------------------------------------------------------------------------

class _SegmentTier:
    """The segment bookkeeping both tiers share; see the module docstring for the contract."""

    name: str
    _kind: ClassVar[type[WarmSegment | ColdSegment]]

    def __init__(self, directory: Path, *, min_live_fraction: float = 0.5, merge_below: int = 1024,
                 merge_max: int = 65536) -> None:
        self.directory = directory
        self._options = {"min_live_fraction": min_live_fraction, "merge_below": merge_below,
                         "merge_max": merge_max}
        self._segments: list[Segment] = []
        self._index: dict[str, tuple[Segment, int]] = {}
        self._retired: list[str] = []
        self._dim: int | None = None
        self._next = 1

    @classmethod
    def open(cls, directory: str | os.PathLike[str], manifest: Mapping[str, Any] | None = None,
             *, keep: Iterable[Mapping[str, Any]] = (), min_live_fraction: float = 0.5,
             merge_below: int = 1024, merge_max: int = 65536) -> Self:
        """Load the tier ``manifest`` (None: empty) describes; delete unreferenced segment files.

        ``keep``: manifests of other snapshots (fallbacks) whose segments must not be deleted.
        Raises StorageError naming the file for a missing or damaged segment.
        """
        directory = Path(directory)
        if not directory.is_dir():
            directory.mkdir(parents=True)
            fsync_dir(directory.parent)
        tier = cls(directory, min_live_fraction=min_live_fraction, merge_below=merge_below,
                   merge_max=merge_max)
        entries, tombstones, tier._dim = cls._parse(manifest)
        needed = {name for name, _ in entries}
        for other in keep:
            needed.update(name for name, _ in cls._parse(other)[0])
        pattern = re.compile(rf"(\d+)\.{cls._kind.suffix}(\.tmp)?")
        ours = [(p, m) for p in sorted(directory.iterdir()) if (m := pattern.fullmatch(p.name)) is not None]
        # Names only grow, past every file on disk and every name a manifest mentions.
        tier._next = max([1] + [int(m[1]) + 1 for _, m in ours] + [int(n.split(".")[0]) + 1 for n in needed])
        try:
            for name, count in entries:
                seg = cls._kind.load(directory / name, name)
                tier._segments.append(seg)
                if len(seg.ids) != count or seg.dim != tier._dim:
                    raise corrupt(seg.path, f"holds {len(seg.ids)} rows of dimension {seg.dim}, "
                                             f"the manifest says {count} of {tier._dim}")
            tier._apply_tombstones(tombstones)
            tier._reindex()
        except BaseException:
            tier.close()
            raise
        # Only once this manifest loaded: a caller that falls back to an older snapshot after a
        # failure here must still find that snapshot's segments.
        orphans = [p for p, _ in ours if p.name not in needed]
        for path in orphans:
            log.warning("deleting %s tier segment %s: no manifest references it", cls.name, path)
            path.unlink()
        if orphans:
            fsync_dir(directory)
        return tier

    @classmethod
    def _parse(cls, manifest: Mapping[str, Any] | None) -> tuple[list[tuple[str, int]], list[list[str]], int | None]:
        """(segments as (name, count), tombstones as [segment, id], dimension); StorageError if malformed."""
        if manifest is None:
            return [], [], None
        try:
            if manifest["tier"] != cls.name or manifest["format"] != FORMAT:
                raise ValueError(f"it is for tier {manifest['tier']!r} format {manifest['format']!r}")
            pattern = re.compile(rf"\d+\.{cls._kind.suffix}")
            entries = [(str(s["name"]), int(s["count"])) for s in manifest["segments"]]
            bad = [name for name, _ in entries if pattern.fullmatch(name) is None]
            if bad:
                raise ValueError(f"{bad} are not {cls._kind.suffix} segment names")
            tombstones = [[str(seg), str(mid)] for seg, mid in manifest["tombstones"]]
            dim = manifest["dimension"]
            return entries, tombstones, None if dim is None else int(dim)
        except (KeyError, TypeError, ValueError) as e:
            raise StorageError(f"{cls.name} tier manifest is invalid: {e}", {"reason": str(e)}) from None

    def _apply_tombstones(self, tombstones: list[list[str]]) -> None:
        by_name = {s.name: s for s in self._segments}
        rows: dict[str, dict[str, int]] = {}
        for name, mid in tombstones:
            seg = by_name.get(name)
            if seg is None:
                raise StorageError(f"{self.name} tier manifest has a tombstone for unknown segment {name}",
                                   {"segment": name})
            if name not in rows:
                rows[name] = {i: r for r, i in enumerate(seg.ids)}
            if mid not in rows[name]:
                raise corrupt(seg.path, f"manifest tombstone {mid!r} is not in this segment")
            seg.kill(rows[name][mid])

    def _reindex(self) -> None:
        """Rebuild id -> (segment, row) in add order; an id live twice keeps its newest copy."""
        self._index = {}
        for seg in self._segments:
            for row in np.flatnonzero(seg.alive).tolist():
                old = self._index.pop(seg.ids[row], None)
                if old is not None:
                    log.warning("%s tier: %r live in %s and %s; keeping the newer",
                                self.name, seg.ids[row], old[0].name, seg.name)
                    old[0].kill(old[1])
                self._index[seg.ids[row]] = (seg, row)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, memory_id: object) -> bool:
        return isinstance(memory_id, str) and memory_id in self._index

    def ids(self) -> Iterator[str]:
        return iter(list(self._index))

    def get(self, memory_id: str) -> Memory | None:
        loc = self._index.get(memory_id)
        if loc is None:
            return None
        seg, row = loc
        rec, emb = seg.read(row)
        return to_memory(rec, emb, seg.links[row], self.name)

    def links(self, memory_id: str) -> tuple[Link, ...]:
        loc = self._index.get(memory_id)
        return loc[0].links[loc[1]] if loc is not None else NO_LINKS

    def search(self, query: Vector, k: int) -> list[tuple[str, float]]:
        """Exact cosine over live rows, best first; ties keep add order."""
        if k <= 0 or not self._index:
            return []
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self._dim:
            raise InvalidArgument(f"query has dimension {q.shape[0]}, the {self.name} tier holds {self._dim}",
                                  {"field": "embedding"})
        ids: list[str] = []
        sims: list[Floats] = []
        for seg in self._segments:
            if seg.live == 0:
                continue
            for start, block in seg.similarities(q):
                live = np.flatnonzero(seg.alive[start:start + len(block)])
                if len(live) > k:
                    live = np.sort(live[np.argpartition(-block[live], k - 1)[:k]])
                ids.extend(seg.ids[start + r] for r in live.tolist())
                sims.append(block[live].astype(np.float32))
        allsims = np.concatenate(sims)
        order = np.argsort(-allsims, kind="stable")[:k]
        return [(ids[i], float(allsims[i])) for i in order.tolist()]

    def add(self, memories: Sequence[Memory]) -> None:
        """Write ``memories`` as one new segment, durable on return; an id already here is replaced.

        Raises InvalidArgument (nothing written) for a repeated id or a wrong dimension, OSError
        if the write fails (nothing changes). Then compacts as the module docstring says; if that
        finds a damaged segment, StorageError propagates but the add itself has taken effect.
        """
        if not memories:
            return
        seen: set[str] = set()
        dim = self._dim if self._dim is not None else int(np.asarray(memories[0].embedding).shape[-1])
        for m in memories:
            if m.id in seen:
                raise InvalidArgument(f"memory id {m.id!r} appears twice in one {self.name} tier add",
                                      {"field": "id", "id": m.id})
            seen.add(m.id)
            if np.shape(m.embedding) != (dim,):
                raise InvalidArgument(f"memory {m.id!r} has embedding shape {np.shape(m.embedding)}, "
                                      f"the {self.name} tier holds dimension {dim}", {"field": "embedding"})
        seg = self._write(memories, len(memories), dim)
        self._dim = dim
        for m in memories:
            old = self._index.pop(m.id, None)
            if old is not None:
                old[0].kill(old[1])
        self._segments.append(seg)
        for row, mid in enumerate(seg.ids):
            self._index[mid] = (seg, row)
        self.compact()

    def _write(self, memories: Iterable[Memory], count: int, dim: int) -> Segment:
        name = f"{self._next:08d}.{self._kind.suffix}"
        self._next += 1
        path = self.directory / name
        self._kind.write(path, memories, count, dim)
        return self._kind.load(path, name)   # re-reading verifies what was written

    def discard(self, memory_id: str) -> None:
        loc = self._index.pop(memory_id, None)
        if loc is not None:
            loc[0].kill(loc[1])

    def compact(self) -> dict[str, Any]:
        """Rewrite sparse segments and merge small neighbours (durably); returns the new manifest.

        The replaced files stay on disk until :meth:`collect` or the next ``open``.
        """
        plan = plan_compaction([(s.live, len(s.ids)) for s in self._segments],
                               min_live_fraction=float(self._options["min_live_fraction"]),
                               merge_below=int(self._options["merge_below"]),
                               merge_max=int(self._options["merge_max"]))
        try:
            for start, end in reversed(plan):   # back to front, so earlier indices stay valid
                group = self._segments[start:end]
                live = sum(s.live for s in group)
                fresh = [self._write(self._live(group), live, int(self._dim or 0))] if live else []
                self._segments[start:end] = fresh
                for old in group:
                    old.close()
                    self._retired.append(old.name)
        finally:
            if plan:   # also after a failed group: the groups done so far are in place
                self._reindex()
        return self.state()

    def _live(self, group: Sequence[Segment]) -> Iterator[Memory]:
        for seg in group:
            for row, rec, emb in seg.rows():
                if seg.alive[row]:
                    yield to_memory(rec, emb, seg.links[row], self.name)

    def collect(self, keep: Iterable[Mapping[str, Any]] = ()) -> list[str]:
        """Delete segment files compaction replaced, except those ``keep`` manifests still name.

        Call after the snapshot holding :meth:`state` is durable. Returns the deleted names.
        """
        needed = {s.name for s in self._segments}
        for other in keep:
            needed.update(name for name, _ in self._parse(other)[0])
        deleted = [n for n in self._retired if n not in needed]
        for name in deleted:
            (self.directory / name).unlink(missing_ok=True)
        self._retired = [n for n in self._retired if n in needed]
        if deleted:
            fsync_dir(self.directory)
        return deleted

    def state(self) -> dict[str, Any]:
        return {
            "tier": self.name, "format": FORMAT, "dimension": self._dim,
            "segments": [{"name": s.name, "count": len(s.ids), "bytes": s.size} for s in self._segments],
            "tombstones": [[s.name, s.ids[r]] for s in self._segments for r in np.flatnonzero(~s.alive).tolist()],
        }

    def close(self) -> None:
        """Release file descriptors and memory maps. Idempotent."""
        for seg in self._segments:
            seg.close()
        self._segments, self._index = [], {}


class WarmTier(_SegmentTier):
    """Memories on disk, embeddings memory-mapped as float16; exact cosine search over them."""

    name = "warm"
    _kind = WarmSegment


class ColdTier(_SegmentTier):
    """Memories in zlib-compressed blocks; ``get`` inflates one block, ``search`` all live ones."""

    name = "cold"
    _kind = ColdSegment
