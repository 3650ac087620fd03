"""The registry: which spaces exist, in ``<data_root>/registry.sqlite`` (stdlib sqlite3, WAL mode).

One row per space::

    spaces(id TEXT PRIMARY KEY, state TEXT, created_at REAL, dimension INTEGER,
           settings TEXT  -- JSON object, key_hashes TEXT  -- JSON array,
           generation INTEGER, tombstoned_at REAL NULL, updated_at REAL)

Only the supervisor writes it in normal operation, but every method is safe
to call from several threads (one connection behind a lock) and from several
processes (``BEGIN IMMEDIATE`` takes sqlite's write lock before reading, and
``busy_timeout`` makes other writers wait for it instead of failing).

Deleting a space is ``tombstone`` (state DELETING, ``tombstoned_at`` set; the
id cannot be created again) -> the supervisor drains the worker and removes
the directory -> ``remove`` (the row is gone; the id is free).

``generation`` counts the worker incarnations of a space: the supervisor bumps
it before each spawn, so a message from a previous incarnation can be told
apart from the current one.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from os import PathLike
from typing import Any, Self

from memspace.errors import Internal, InvalidArgument, SpaceExists, SpaceNotFound, SpaceUnavailable
from memspace.ids import validate_space_id
from memspace.supervisor.lifecycle import INITIAL, State

SCHEMA_VERSION = 1
#: How long a writer waits for another process's write lock before failing.
BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spaces (
    id            TEXT PRIMARY KEY,
    state         TEXT NOT NULL,
    created_at    REAL NOT NULL,
    dimension     INTEGER NOT NULL,
    settings      TEXT NOT NULL,
    key_hashes    TEXT NOT NULL DEFAULT '[]',
    generation    INTEGER NOT NULL DEFAULT 0,
    tombstoned_at REAL,
    updated_at    REAL NOT NULL
)
"""
_COLUMNS = "id, state, created_at, dimension, settings, key_hashes, generation, tombstoned_at, updated_at"


@dataclass(frozen=True)
class SpaceRecord:
    id: str
    state: str                       # a lifecycle State name
    created_at: float
    dimension: int
    settings: dict[str, Any]
    generation: int
    tombstoned_at: float | None
    key_hashes: tuple[str, ...] = ()
    updated_at: float = 0.0

    @property
    def tombstoned(self) -> bool:
        return self.tombstoned_at is not None


class Registry:
    """The spaces of one deployment. Close it with :meth:`close` (or use ``with``)."""

    def __init__(self, path: str | PathLike[str], *, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self._clock = clock
        self._lock = threading.Lock()
        # isolation_level=None: no implicit transactions; every write below opens its own.
        self._db: sqlite3.Connection | None = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            self._setup(self._db)
        except BaseException:
            self.close()
            raise

    def _setup(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        mode = _enable_wal(conn)
        if mode.lower() != "wal":
            raise Internal(f"registry {self.path}: cannot enable WAL mode (got {mode!r})")
        # NORMAL is durable in WAL mode except for the last transactions on power loss; the
        # registry changes rarely, so pay for FULL and never lose a created space.
        conn.execute("PRAGMA synchronous = FULL")
        with self._write() as db:
            db.execute(_SCHEMA)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise Internal(f"registry {self.path} has schema version {version}; "
                               f"this memspace reads version {SCHEMA_VERSION}")

    # -- reads ----------------------------------------------------------------------------------

    def get(self, space_id: str) -> SpaceRecord | None:
        """The space's record (tombstoned ones included), or None."""
        validate_space_id(space_id)
        with self._lock:
            row = self._conn().execute(
                f"SELECT {_COLUMNS} FROM spaces WHERE id = ?", (space_id,)).fetchone()
        return _record(row) if row else None

    def list(self, include_tombstoned: bool = False) -> list[SpaceRecord]:
        """Every space, ordered by id; tombstoned ones only if asked for."""
        where = "" if include_tombstoned else "WHERE tombstoned_at IS NULL"
        with self._lock:
            rows = self._conn().execute(f"SELECT {_COLUMNS} FROM spaces {where} ORDER BY id").fetchall()
        return [_record(row) for row in rows]

    # -- writes ---------------------------------------------------------------------------------

    def create(self, space_id: str, *, dimension: int,
               settings: Mapping[str, Any]) -> tuple[SpaceRecord, bool]:
        """Register a space; returns ``(record, created)``.

        Atomic and idempotent: if the id exists with the same dimension and settings
        the existing record is returned with ``created=False`` (also when many callers
        race: exactly one creates, every one succeeds). Raises InvalidSpaceId,
        InvalidArgument (dimension, settings), SpaceExists naming what differs, or
        SpaceUnavailable if the id is tombstoned and still being deleted. ``settings``
        should be the fully resolved settings, so equal intents compare equal.
        """
        validate_space_id(space_id)
        if type(dimension) is not int or not 1 <= dimension <= 65536:
            raise InvalidArgument(f"dimension must be an integer in 1..65536, got {dimension!r}",
                                  {"field": "dimension"})
        settings_json = _settings_json(settings)
        wanted = json.loads(settings_json)
        now = self._clock()
        with self._write() as db:
            inserted = db.execute(
                "INSERT INTO spaces (id, state, created_at, dimension, settings, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (space_id, INITIAL.name, now, dimension, settings_json, now)).rowcount == 1
            row = db.execute(f"SELECT {_COLUMNS} FROM spaces WHERE id = ?", (space_id,)).fetchone()
        record = _record(row)
        if inserted:
            return record, True
        if record.tombstoned:
            raise SpaceUnavailable(
                f"space {space_id!r} is being deleted; create it again once the deletion finishes",
                {"space": space_id, "retry_after_s": 1})
        differs = ["dimension"] if record.dimension != dimension else []
        differs += sorted(k for k in set(wanted) | set(record.settings)
                          if wanted.get(k, _MISSING) != record.settings.get(k, _MISSING))
        if differs:
            have = {"dimension": record.dimension, **record.settings}
            asked = {"dimension": dimension, **wanted}
            raise SpaceExists(
                f"space {space_id!r} already exists with different settings: " + ", ".join(
                    f"{k} is {have.get(k, '<unset>')!r} (requested {asked.get(k, '<unset>')!r})"
                    for k in differs),
                {"space": space_id, "differs": differs})
        return record, False

    def set_state(self, space_id: str, state: State | str) -> None:
        """Record a lifecycle state (legality is the caller's: see lifecycle.transition)."""
        name = state.name if isinstance(state, State) else state
        if name not in State.__members__:
            raise InvalidArgument(f"unknown lifecycle state {state!r}", {"field": "state"})
        self._update(space_id, "state = ?", (name,))

    def set_key_hashes(self, space_id: str, key_hashes: Iterable[str]) -> None:
        """Replace the hashes of the access keys allowed on this space."""
        hashes = sorted(set(key_hashes))
        if not all(isinstance(h, str) for h in hashes):
            raise InvalidArgument("key hashes must be strings", {"field": "key_hashes"})
        self._update(space_id, "key_hashes = ?", (json.dumps(hashes),))

    def bump_generation(self, space_id: str) -> int:
        """Increment and return the space's generation (before each spawn)."""
        validate_space_id(space_id)
        with self._write() as db:
            row = db.execute("UPDATE spaces SET generation = generation + 1, updated_at = ? "
                             "WHERE id = ? RETURNING generation", (self._clock(), space_id)).fetchone()
        if row is None:
            raise SpaceNotFound(f"space {space_id!r} is not registered", {"space": space_id})
        return int(row[0])

    def tombstone(self, space_id: str) -> SpaceRecord:
        """Mark the space as being deleted (state DELETING). Idempotent: a second call keeps
        the first ``tombstoned_at``. Raises SpaceNotFound."""
        validate_space_id(space_id)
        now = self._clock()
        with self._write() as db:
            db.execute("UPDATE spaces SET tombstoned_at = COALESCE(tombstoned_at, ?), state = ?, "
                       "updated_at = ? WHERE id = ?", (now, State.DELETING.name, now, space_id))
            row = db.execute(f"SELECT {_COLUMNS} FROM spaces WHERE id = ?", (space_id,)).fetchone()
        if row is None:
            raise SpaceNotFound(f"space {space_id!r} is not registered", {"space": space_id})
        return _record(row)

    def remove(self, space_id: str) -> None:
        """Drop a tombstoned space's row; the id may then be created afresh. Idempotent for a
        missing row (a retried deletion). Raises Internal for a row that is not tombstoned:
        removing a live space would orphan its worker and files."""
        validate_space_id(space_id)
        with self._write() as db:
            row = db.execute("SELECT tombstoned_at FROM spaces WHERE id = ?", (space_id,)).fetchone()
            if row is not None and row[0] is None:
                raise Internal(f"space {space_id!r} must be tombstoned before it is removed",
                               {"space": space_id})
            db.execute("DELETE FROM spaces WHERE id = ?", (space_id,))

    def close(self) -> None:
        """Close the connection; idempotent. Any later call raises Internal."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise Internal(f"registry {self.path} is closed")
        return self._db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """Thread lock + ``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any error)."""
        with self._lock:
            db = self._conn()
            # IMMEDIATE takes sqlite's write lock now, so read-then-write cannot race another
            # process; a concurrent writer waits up to busy_timeout for it.
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _update(self, space_id: str, assignment: str, args: tuple[Any, ...]) -> None:
        validate_space_id(space_id)
        with self._write() as db:
            count = db.execute(f"UPDATE spaces SET {assignment}, updated_at = ? WHERE id = ?",
                               (*args, self._clock(), space_id)).rowcount
        if count == 0:
            raise SpaceNotFound(f"space {space_id!r} is not registered", {"space": space_id})


_MISSING = object()


def _enable_wal(db: sqlite3.Connection) -> str:
    """Switch a (possibly new) database to WAL mode; returns the resulting mode.

    The switch needs an exclusive lock, and sqlite answers "database is locked" without
    calling the busy handler when several processes open a fresh file at once; so retry,
    bounded by BUSY_TIMEOUT_S. Once the file is in WAL mode (persistent) this is a no-op.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.001
    while True:
        try:
            return str(db.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _settings_json(settings: Mapping[str, Any]) -> str:
    if not isinstance(settings, Mapping):
        raise InvalidArgument(f"settings must be a mapping, got {type(settings).__name__}",
                              {"field": "settings"})
    try:
        return json.dumps(dict(settings), sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"settings must be JSON-serialisable: {e}", {"field": "settings"}) from None


def _record(row: tuple[Any, ...]) -> SpaceRecord:
    (id_, state, created_at, dimension, settings, key_hashes, generation, tombstoned_at,
     updated_at) = row
    return SpaceRecord(id=id_, state=state, created_at=created_at, dimension=dimension,
                       settings=json.loads(settings), generation=generation,
                       tombstoned_at=tombstoned_at, key_hashes=tuple(json.loads(key_hashes)),
                       updated_at=updated_at)
