"""The durable memory space: the engine wrapped with its WAL, snapshots, tier files and clock.

A :class:`Space` owns one directory (layout in docs/design.md) and is the
object both the embedded API (``memspace.open_space``) and a worker process
serve. Guarantees:

* A write returns only after its WAL record is fsynced (``wal.fsync =
  "always"``); with ``interval`` or ``never`` it returns once the record is
  handed to the OS, so it survives a crash of the process but maybe not of the
  machine.
* Inside :meth:`Space.group_commit` writes are applied immediately (later
  operations see them) but made durable together at the end with one fsync;
  the caller must not acknowledge them before the block exits.
* If a WAL write or fsync fails the space closes itself and raises: its
  in-memory state may be ahead of the disk, and only recovery from the files
  is trusted (reopen it).
* A re-sent ``request_id`` returns the first result without applying the write
  again, also after a crash (request ids are in the WAL and in snapshots).
* One process at a time: the directory is locked (``LOCK``, fcntl); a second
  opener gets ``SpaceUnavailable``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import orjson

from memspace import config as config_mod
from memspace.clock import SYSTEM_CLOCK, Clock
from memspace.engine import records
from memspace.engine.embedder import get_embedder
from memspace.engine.model import Hit, Limits, Link, Memory, Page, RememberResult, SpaceSettings
from memspace.engine.replay import results_of
from memspace.engine.store import Engine
from memspace.errors import InvalidArgument, SpaceUnavailable, StorageError
from memspace.ids import new_memory_id
from memspace.metrics import new_histogram, observe
from memspace.storage import fsutil
from memspace.storage.snapshot import list_snapshots, load_latest, write_snapshot
from memspace.storage.tiers import ColdTier, WarmTier
from memspace.storage.wal import Wal

log = logging.getLogger("memspace.storage.space")

FORMAT_VERSION = 1
#: Buffered reinforcement records are handed to the OS once they reach this size.
TOUCH_FLUSH_BYTES = 256 * 1024
#: Results of this many most recent request ids are kept for idempotent retries.
REQUEST_CACHE_SIZE = 100_000


@dataclass(frozen=True)
class SpaceStats:
    path: str
    dimension: int
    memories: int
    memories_by_tier: dict[str, int]
    wal_bytes: int
    wal_last_seq: int
    wal_durable_seq: int
    wal_bytes_since_checkpoint: int
    checkpoint_lsn: int
    checkpoint_at: float | None
    snapshot_bytes: int
    recovered_records: int
    recovery_s: float
    fsync: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class CheckpointInfo:
    lsn: int
    path: str
    bytes: int
    demoted_to_warm: int
    demoted_to_cold: int
    wal_segments_dropped: int
    seconds: float


def _space_settings(cfg: config_mod.Config, dimension: int | None, given: Mapping[str, Any] | None) -> SpaceSettings:
    base = {
        "dimension": cfg["spaces.dimension"],
        "embedder": cfg["spaces.embedder"],
        "dedup_threshold": cfg["spaces.dedup_threshold"],
        "link_threshold": cfg["spaces.link_threshold"],
        "max_auto_links": cfg["spaces.max_auto_links"],
        "decay": cfg["spaces.decay"],
        "half_life_s": cfg["spaces.half_life_s"],
        "decay_floor": cfg["spaces.decay_floor"],
    }
    base.update(given or {})
    if dimension is not None:
        base["dimension"] = dimension
    return SpaceSettings.from_dict(base)


def limits_from_config(cfg: config_mod.Config) -> Limits:
    return Limits(
        max_content_bytes=cfg["limits.max_content_bytes"],
        max_k=cfg["limits.max_k"],
        max_batch=cfg["limits.max_batch"],
        max_memories=cfg["limits.max_memories_per_space"],
    )


class Space:
    """One durable memory space. Use :func:`open_space`; also a context manager."""

    def __init__(self, path: Path, *, settings: SpaceSettings, cfg: config_mod.Config, clock: Clock,
                 id_factory: Callable[[], str], lock_fd: int, meta: dict[str, Any],
                 on_record: Callable[[int, Any], None] | None = None, record_tail: int | None = None) -> None:
        self.path = path
        self.settings = settings
        self.meta = meta
        self._cfg = cfg
        self._clock = clock
        self._new_id = id_factory
        self._lock_fd = lock_fd
        self._group_depth = 0
        self._unsynced_writes = False   # a write waits for commit (touches alone never force an fsync)
        self._closed = False
        self._requests: OrderedDict[str, Any] = OrderedDict()
        self._checkpoint_lsn = 0
        self._checkpoint_at: float | None = None
        self._checkpoint_bytes = cfg["checkpoint_every_mb"] * 1024 * 1024
        self._recovered = 0
        self._recovery_s = 0.0
        self._on_record = on_record
        self._record_tail = record_tail
        #: fsync latency (write + fsync of a group commit), cumulative for this open
        self.fsync_histogram = new_histogram()
        try:
            self._recover()
        except BaseException:
            # A space that did not recover serves nothing: release the files recovery opened, so
            # retrying the open (after a repair, say) does not leak descriptors and maps.
            for part in ("_wal", "_warm", "_cold"):
                with contextlib.suppress(Exception):
                    getattr(self, part).close()
            raise

    # -- opening -----------------------------------------------------------------------------

    def _recover(self) -> None:
        start = self._clock.monotonic()
        cfg = self._cfg
        snap = load_latest(self.path / "snapshots")
        state: dict[str, Any] = snap.meta if snap is not None else {}
        self._prev_tiers: dict[str, Any] = {"warm": state.get("warm"), "cold": state.get("cold")}
        # The previous snapshot is kept as a fallback: its tier segments must outlive this open
        # even when compaction replaced them in the snapshot loaded now.
        fallback = state.get("fallback_tiers") or {}
        self._warm = WarmTier.open(self.path / "warm", state.get("warm"),
                                   keep=[m for m in (fallback.get("warm"),) if m])
        self._cold = ColdTier.open(self.path / "cold", state.get("cold"),
                                   keep=[m for m in (fallback.get("cold"),) if m])
        embedder = get_embedder(self.settings.embedder, self.settings.dimension)
        common = dict(limits=limits_from_config(cfg), embedder=embedder, warm=self._warm, cold=self._cold,
                      ann_threshold=cfg["tiers.ann_threshold"])
        if snap is not None:
            self._engine = Engine.restore(snap.arrays, state["engine"], self.settings, **common)
            self._checkpoint_lsn = snap.lsn
            self._checkpoint_at = state.get("at")
            for request_id, encoded in state.get("requests", []):
                self._requests[request_id] = _decode_result(encoded)
        else:
            self._engine = Engine(self.settings, **common)
        self._wal = Wal.open(
            self.path / "wal",
            fsync=cfg["wal.fsync"],
            fsync_interval_s=cfg["wal.fsync_interval_ms"] / 1000.0,
            segment_bytes=int(cfg["wal.segment_mb"] * 1024 * 1024),
            start_seq=self._checkpoint_lsn,
        )
        # Wal.open has just CRC-checked every record: replay reads them in place, unchecked
        tail, lsn = self._record_tail, self._checkpoint_lsn
        self._hooked_after = lsn
        if self._on_record is not None and tail is not None:
            self._hook_before_snapshot(tail)
        count = self._engine.replay(self._wal.payloads(after_seq=lsn),
                                    on_result=self._cache_result, on_record=self._on_record,
                                    record_after=0 if tail is None else self._wal.last_seq - tail,
                                    expected=self._new_rows_at_most(), allocate=fsutil.populated_zeros)
        self._recovered = count
        self._recovery_s = self._clock.monotonic() - start
        if count or snap is not None:
            log.info("space %s recovered: snapshot lsn %d + %d WAL records in %.3f s",
                     self.path, self._checkpoint_lsn, count, self._recovery_s)

    def _hook_before_snapshot(self, tail: int) -> None:
        """``on_record`` for the last ``tail`` records that the snapshot holds already but the
        WAL still has (checkpoints keep segments back to the older of the two snapshots): a
        change feed keeps its events across a checkpoint, a hibernation say. Not applied again."""
        assert self._on_record is not None
        lsn = self._checkpoint_lsn
        start = max(self._wal.first_seq - 1, self._wal.last_seq - tail, 0)
        if start >= lsn:
            return
        self._hooked_after = start
        for seq, type_, payload in self._wal.payloads(after_seq=start):
            if seq > lsn:
                break
            self._on_record(seq, records.decode(type_, payload))

    def _new_rows_at_most(self) -> int:
        """The most memories the WAL after the snapshot can add: each carries its embedding."""
        records = self._wal.last_seq - self._checkpoint_lsn
        return min(records, self._wal.bytes_since(self._checkpoint_lsn) // (4 * self.settings.dimension))

    # -- writes ------------------------------------------------------------------------------

    def remember(self, content: str | None = None, embedding: Any = None, *, id: str | None = None,
                 confidence: float | None = None, tags: Sequence[str] | None = None,
                 metadata: Mapping[str, Any] | None = None, links: Sequence[Mapping[str, Any]] | None = None,
                 request_id: str | None = None) -> RememberResult:
        """Store a memory (or reinforce a near-duplicate: ``outcome == "merged"``)."""
        item: dict[str, Any] = {}
        for key, value in (("content", content), ("embedding", embedding), ("id", id),
                           ("confidence", confidence), ("tags", tags), ("metadata", metadata), ("links", links)):
            if value is not None:
                item[key] = value
        results = self._write(
            lambda: self._engine.plan_remember([item], self._clock.time(), self._new_id, request_id),
            request_id, list,
        )
        first: RememberResult = results[0]
        return first

    def remember_batch(self, items: Sequence[Mapping[str, Any]], *, request_id: str | None = None
                       ) -> list[RememberResult]:
        """Store many memories as one record: all or none, one fsync."""
        if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
            raise InvalidArgument("items must be a list of memory objects", {"field": "items"})
        return list(self._write(
            lambda: self._engine.plan_remember(list(items), self._clock.time(), self._new_id, request_id),
            request_id, list,
        ))

    def restore(self, items: Sequence[Mapping[str, Any]], *, request_id: str | None = None) -> int:
        """Put memories in exactly as exported (``get``'s fields plus the embedding): ids, times,
        access counts, tags, metadata and links as given, no dedup, no auto-links; a memory
        with the same id is replaced in full. One record: all or none, one fsync. Returns how
        many memories were restored. See :meth:`Engine.plan_restore`."""
        if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
            raise InvalidArgument("items must be a list of memory objects", {"field": "items"})
        return int(self._write(
            lambda: self._engine.plan_restore(list(items), self._clock.time(), request_id),
            request_id, int,
        ))

    def forget(self, id: str | None = None, *, ids: Sequence[str] | None = None,
               tags: Sequence[str] | None = None, before: float | None = None,
               request_id: str | None = None) -> int:
        """Delete memories by id, ids, or filter (tags and/or created before); returns how many."""
        if id is not None:
            if ids is not None:
                raise InvalidArgument("give either id or ids, not both", {"field": "ids"})
            ids = [id]
        if ids is None and tags is None and before is None:
            raise InvalidArgument("forget needs an id, ids, tags or before", {"field": "id"})
        return int(self._write(
            lambda: self._engine.plan_forget(ids, tags=tags, before=before, request_id=request_id),
            request_id, int,
        ))

    def link(self, source: str, target: str, weight: float = 1.0, kind: str = "related", *,
             request_id: str | None = None) -> Link:
        """Add (or re-weight) the directed link ``source -> target``."""
        return self._write(  # type: ignore[no-any-return]
            lambda: self._engine.plan_link(source, target, weight, kind, now=self._clock.time(),
                                           request_id=request_id),
            request_id, Link,
        )

    def _write(self, plan: Callable[[], Any], request_id: str | None, result_type: type) -> Any:
        """Plan, log, apply, commit; or the first result of ``request_id`` (of ``result_type``:
        a request id reused for another kind of write is an error, not that write's result)."""
        self._check_open()
        if request_id is not None:
            if not isinstance(request_id, str) or not 1 <= len(request_id) <= 200:
                raise InvalidArgument("request_id must be a string of 1-200 characters",
                                      {"field": "request_id"})
            if request_id in self._requests:
                first = self._requests[request_id] = results_of(self._requests[request_id])
                if not isinstance(first, result_type):
                    raise InvalidArgument(f"request_id {request_id!r} was already used for a different "
                                          "kind of write", {"field": "request_id"})
                self._requests.move_to_end(request_id)
                return first
        rec = plan()
        seq = self._append(rec)
        self._unsynced_writes = True
        result = self._engine.apply(rec)
        if self._on_record is not None:
            self._on_record(seq, rec)
        if request_id is not None:
            self._cache_result(request_id, result)
        if self._group_depth == 0:
            self._commit()
        return result

    def _append(self, rec: Any) -> int:
        try:
            return self._wal.append(*records.encode(rec))
        except OSError as e:
            self._fail(e)

    def _commit(self) -> None:
        if not self._unsynced_writes:
            # only reinforcement (TOUCH) records since the last commit: nobody waits on them;
            # hand them to the OS once enough accumulate, never pay an fsync for them
            if self._wal.buffered_bytes >= TOUCH_FLUSH_BYTES:
                try:
                    self._wal.flush()
                except OSError as e:
                    self._fail(e)
            return
        self._unsynced_writes = False
        start = time.perf_counter()
        try:
            synced = self._wal.commit()
        except OSError as e:
            self._fail(e)
        if synced:
            observe(self.fsync_histogram, time.perf_counter() - start)
        if self._wal.bytes_since(self._checkpoint_lsn) >= self._checkpoint_bytes:
            self.checkpoint()

    def _fail(self, error: OSError) -> NoReturn:
        log.error("space %s: WAL write failed (%s); closing, recovery will use the files", self.path, error)
        self._release()
        raise StorageError(f"space {self.path}: WAL write failed: {error}", {"errno": error.errno}) from error

    @contextlib.contextmanager
    def group_commit(self) -> Iterator[None]:
        """Apply writes now, make them durable together at the end (one fsync).

        Results obtained inside the block must not be acknowledged to anyone until
        the block has exited without an exception.
        """
        self._check_open()
        self._group_depth += 1
        try:
            yield
        finally:
            self._group_depth -= 1
        if self._group_depth == 0 and not self._closed:
            self._commit()

    def _cache_result(self, request_id: str, result: Any) -> None:
        self._requests[request_id] = result
        self._requests.move_to_end(request_id)
        while len(self._requests) > REQUEST_CACHE_SIZE:
            self._requests.popitem(last=False)

    # -- reads -------------------------------------------------------------------------------

    def get(self, id: str) -> Memory:
        self._check_open()
        return self._engine.get(id)

    def recall(self, query: str | None = None, embedding: Any = None, *, k: int = 10, threshold: float = 0.0,
               mode: str = "spreading", max_depth: int = 3, tags: Sequence[str] | None = None,
               since: float | None = None, until: float | None = None,
               tiers: Sequence[str] | None = None) -> list[Hit]:
        """Ranked memories for a text and/or embedding cue; returned memories are reinforced."""
        self._check_open()
        now = self._clock.time()
        hits = self._engine.recall(query=query, embedding=embedding, k=k, threshold=threshold, mode=mode,
                                   max_depth=max_depth, tags=tags, since=since, until=until, tiers=tiers,
                                   now=now)
        if hits:
            # Reinforcement is logged but never forces an fsync: losing the last few touches in a
            # crash only makes those memories decay as if they had not been recalled.
            touch = self._engine.plan_touch([h.id for h in hits], now)
            seq = self._append(touch)
            self._engine.apply(touch)
            if self._on_record is not None:
                self._on_record(seq, touch)
            if self._group_depth == 0:
                self._commit()
        return hits

    def count(self, tier: str | None = None) -> int:
        self._check_open()
        return self._engine.count(tier)

    def list(self, limit: int = 100, cursor: str | None = None, tier: str | None = None) -> Page:
        self._check_open()
        return self._engine.page(limit=limit, cursor=cursor, tier=tier)

    def stats(self) -> SpaceStats:
        self._check_open()
        by_tier = {t: self._engine.count(t) for t in ("hot", "warm", "cold")}
        snaps = list_snapshots(self.path / "snapshots")
        return SpaceStats(
            path=str(self.path),
            dimension=self.settings.dimension,
            memories=sum(by_tier.values()),
            memories_by_tier=by_tier,
            wal_bytes=self._wal.total_bytes,
            wal_last_seq=self._wal.last_seq,
            wal_durable_seq=self._wal.durable_seq,
            wal_bytes_since_checkpoint=self._wal.bytes_since(self._checkpoint_lsn),
            checkpoint_lsn=self._checkpoint_lsn,
            checkpoint_at=self._checkpoint_at,
            snapshot_bytes=sum(p.stat().st_size for _, p in snaps),
            recovered_records=self._recovered,
            recovery_s=self._recovery_s,
            fsync=self._cfg["wal.fsync"],
        )

    # -- maintenance -------------------------------------------------------------------------

    def sync(self) -> None:
        """Make everything written so far durable, whatever the fsync policy."""
        self._check_open()
        try:
            self._wal.sync()
        except OSError as e:
            self._fail(e)

    def sync_due(self) -> float | None:
        """Seconds until the ``interval`` fsync policy wants :meth:`sync` (None: nothing pending)."""
        return self._wal.sync_due()

    def checkpoint(self) -> CheckpointInfo:
        """Demote over-capacity memories, write a snapshot, drop the WAL it makes redundant.

        A crash at any point leaves either the previous snapshot + WAL or the new one
        valid: tier segments are durable before the snapshot that names them, and WAL
        segments are dropped only after it (up to the older of the two kept snapshots,
        so falling back to it still finds its WAL).
        """
        self._check_open()
        start = self._clock.monotonic()
        self.sync()
        demotion = self._engine.plan_demotion(self._cfg["tiers.hot_capacity"], self._cfg["tiers.warm_capacity"])
        self._engine.demote(demotion)
        arrays, engine_meta = self._engine.snapshot_state()
        lsn = self._wal.last_seq
        now = self._clock.time()
        meta = {
            "format": FORMAT_VERSION,
            "at": now,
            "engine": engine_meta,
            "warm": self._warm.state(),
            "cold": self._cold.state(),
            "fallback_tiers": self._prev_tiers,
            "requests": [[rid, _encode_result(res)] for rid, res in self._requests.items()],
        }
        path = write_snapshot(self.path / "snapshots", lsn, arrays, meta)
        # Tier files replaced by compaction can go once no kept snapshot names them; the
        # previous snapshot is kept as a fallback, so its tier files stay too.
        self._warm.collect(keep=[m for m in (self._prev_tiers.get("warm"),) if m])
        self._cold.collect(keep=[m for m in (self._prev_tiers.get("cold"),) if m])
        self._prev_tiers = {"warm": meta["warm"], "cold": meta["cold"]}
        kept = list_snapshots(self.path / "snapshots")
        oldest_kept = min(s for s, _ in kept)
        dropped = self._wal.drop_through(oldest_kept)
        self._checkpoint_lsn, self._checkpoint_at = lsn, now
        info = CheckpointInfo(lsn, str(path), path.stat().st_size, len(demotion.to_warm),
                              len(demotion.to_cold), len(dropped), self._clock.monotonic() - start)
        log.info("space %s checkpoint at lsn %d: %d bytes, %d WAL segments dropped, %.3f s",
                 self.path, lsn, info.bytes, info.wal_segments_dropped, info.seconds)
        return info

    def close(self) -> None:
        """Make everything durable and release the directory. Idempotent."""
        if self._closed:
            return
        try:
            self._wal.close()
        finally:
            self._release()

    def _release(self) -> None:
        if self._closed:
            return
        self._closed = True
        for closer in (getattr(self._wal, "close", None), self._warm.close, self._cold.close):
            with contextlib.suppress(Exception):
                if closer is not None:
                    closer()
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)

    def _check_open(self) -> None:
        if self._closed:
            raise SpaceUnavailable(f"space {self.path} is closed", {"path": str(self.path)})

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest record (cheap: no statistics gathered)."""
        return self._wal.last_seq

    @property
    def checkpoint_lsn(self) -> int:
        return self._checkpoint_lsn

    @property
    def hooked_after(self) -> int:
        """``on_record`` saw every record after this seq (those replayed at open, and with
        ``record_tail`` the ones before the snapshot the WAL still has)."""
        return self._hooked_after

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def engine(self) -> Engine:
        """The engine, for read-only inspection in tests and tools."""
        return self._engine

    def __enter__(self) -> Space:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Space {self.path} dimension={self.settings.dimension}{' closed' if self._closed else ''}>"


# -- results in snapshots (idempotent retries across restarts) ---------------------------------

def _encode_result(result: Any) -> Any:
    result = results_of(result)
    if isinstance(result, list):
        return {"t": "remember", "v": [r.to_dict() for r in result]}
    if isinstance(result, Link):
        return {"t": "link", "v": result.to_dict()}
    return {"t": "value", "v": result}


def _decode_result(encoded: Mapping[str, Any]) -> Any:
    kind, value = encoded["t"], encoded["v"]
    if kind == "remember":
        return [RememberResult.from_dict(d) for d in value]
    if kind == "link":
        return Link.from_dict(value)
    return value


# -- opening -----------------------------------------------------------------------------------

def _lock(path: Path) -> int:
    fd = os.open(path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)
        raise SpaceUnavailable(
            f"space directory {path} is open in another process (pid {holder})",
            {"path": str(path), "pid": holder},
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def open_space(
    path: str | os.PathLike[str],
    dimension: int | None = None,
    *,
    settings: Mapping[str, Any] | None = None,
    config: config_mod.Config | None = None,
    fsync: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
    id_factory: Callable[[], str] = new_memory_id,
    space_id: str | None = None,
    create: bool = True,
    on_record: Callable[[int, Any], None] | None = None,
    record_tail: int | None = None,
) -> Space:
    """Open the space in ``path``, creating it if needed (``create=False`` refuses to).

    An existing space keeps the dimension and settings it was created with; asking
    for different ones is an error rather than a silent override. ``config`` supplies
    WAL, tier, limit and new-space defaults (``memspace.config.load()`` when omitted);
    ``fsync`` overrides ``wal.fsync``. ``on_record(seq, record)`` is called for every
    record applied, during recovery and after (the worker's change feed); during recovery
    only for the last ``record_tail`` records when that is given (a feed that keeps the
    last N events needs no more, and decoding every record for it is most of a replay),
    and then also for those of them the snapshot holds already, as far as the WAL still
    has them (``Space.hooked_after`` says from where on).
    """
    cfg = config if config is not None else config_mod.load()
    if fsync is not None:
        cfg = cfg.replace({"wal.fsync": fsync})
    root = Path(path)
    meta_path = root / "space.json"
    if not meta_path.exists():
        if not create:
            raise StorageError(f"no memory space at {root} (space.json missing)", {"path": str(root)})
        root.mkdir(parents=True, exist_ok=True)
    lock_fd = _lock(root)
    try:
        if meta_path.exists():
            meta = orjson.loads(meta_path.read_bytes())
            if meta.get("format") != FORMAT_VERSION:
                raise StorageError(f"{meta_path}: unsupported format {meta.get('format')!r}",
                                   {"path": str(meta_path)})
            space_settings = SpaceSettings.from_dict(meta["settings"])
            if dimension is not None and dimension != space_settings.dimension:
                raise InvalidArgument(
                    f"space at {root} has dimension {space_settings.dimension}, not {dimension}",
                    {"field": "dimension"},
                )
            if settings:
                asked = _space_settings(cfg, space_settings.dimension, {**space_settings.to_dict(), **settings})
                if asked != space_settings:
                    raise InvalidArgument(f"space at {root} was created with other settings",
                                          {"existing": space_settings.to_dict(), "asked": asked.to_dict()})
        else:
            space_settings = _space_settings(cfg, dimension, settings)
            meta = {
                "format": FORMAT_VERSION,
                "id": space_id,
                "dimension": space_settings.dimension,
                "settings": space_settings.to_dict(),
                "created_at": clock.time(),
            }
            for sub in ("wal", "snapshots", "warm", "cold"):
                (root / sub).mkdir(exist_ok=True)
            fsutil.atomic_write(meta_path, orjson.dumps(meta, option=orjson.OPT_INDENT_2))
        return Space(root, settings=space_settings, cfg=cfg, clock=clock, id_factory=id_factory,
                     lock_fd=lock_fd, meta=meta, on_record=on_record, record_tail=record_tail)
    except BaseException:
        os.close(lock_fd)
        raise
