"""Admin operations, answered by the supervisor inside the router process.

Each handler gets the request and a ``reply(result)`` / ``fail(error)`` pair;
operations that wait for a worker (drain, hibernate, restart, delete) keep the
pair and answer when the worker has done its part. ``repair`` blocks on the disk,
so it runs as a :class:`~memspace.supervisor.jobs.Jobs` job off the loop and
answers when the job is collected.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from memspace import wire
from memspace.engine.model import SpaceSettings
from memspace.errors import (
    Internal,
    InvalidArgument,
    MemspaceError,
    QuotaExceeded,
    SpaceNotFound,
    SpaceUnavailable,
)
from memspace.ids import validate_space_id
from memspace.metrics import OTHER, LabelGuard, merge_histogram, new_histogram
from memspace.supervisor.core import Slot, Supervisor
from memspace.supervisor.jobs import Jobs
from memspace.supervisor.lifecycle import State
from memspace.testing import faults

log = logging.getLogger("memspace.supervisor.admin")

Reply = Callable[[Any], None]
Fail = Callable[[MemspaceError], None]


class Admin:
    def __init__(self, sup: Supervisor, jobs: Jobs) -> None:
        self.sup = sup
        self.jobs = jobs                  # the loop collects their completions (repair)
        self.started = time.time()
        self.labels = LabelGuard(sup.cfg["max_metric_spaces"])

    def handle(self, client: bytes, req: wire.ClientRequest) -> None:
        router = self.sup.router

        def reply(result: Any) -> None:
            router.reply(client, wire.encode_reply(req.request_id, result))

        def fail(err: MemspaceError) -> None:
            router.reply(client, wire.encode_error(req.request_id, err.code, err.message, err.details))

        args = wire.decode_body(req.body)
        handler = getattr(self, "op_" + req.op)
        try:
            handler(req.space, args, reply, fail)
        except MemspaceError as e:
            fail(e)

    # -- helpers -----------------------------------------------------------------------------

    def _slot(self, space: str) -> Slot:
        validate_space_id(space, "field")
        slot = self.sup.slots.get(space)
        if slot is None:
            record = self.sup.registry.get(space)
            if record is None:
                raise SpaceNotFound(f"memory space {space!r} does not exist", {"space": space})
            slot = self.sup.slot(record)
        return slot

    def status_of(self, slot: Slot) -> dict[str, Any]:
        now = self.sup.clock.monotonic()
        info = slot.info
        pid = slot.handle.pid if slot.handle is not None else None
        return {
            "id": slot.space,
            "state": slot.state.name,
            "pid": pid,
            "generation": slot.generation,
            "dimension": slot.record.dimension,
            "settings": slot.record.settings,
            "created_at": slot.record.created_at,
            "uptime_s": (now - slot.ready_at) if (slot.ready_at is not None and pid) else None,
            "restarts": slot.restarts,
            "restart_reasons": dict(slot.restart_reasons),
            "last_error": slot.last_error,
            "repairing": slot.repairing,
            "memories": info.get("memories"),
            "memories_by_tier": info.get("memories_by_tier"),
            "wal_bytes": info.get("wal_bytes"),
            "wal_lag_bytes": info.get("wal_lag_bytes"),
            "checkpoint_at": info.get("checkpoint_at"),
            "rss_bytes": info.get("rss_bytes"),
            "ops": self._ops(slot.space),
            **self.sup.router.metrics.latency_quantiles(slot.space),
            **self.sup.router.depth(slot.space),
        }

    def _ops(self, space: str) -> dict[str, Any]:
        """Per operation: outcome counts ("ok" or an error code) and the latency histogram."""
        m = self.sup.router.metrics.spaces.get(space)
        if m is None:
            return {}
        ops: dict[str, Any] = {}
        for (op, outcome), n in m.counts.items():
            entry = ops.setdefault(op, {"outcomes": {}, "latency": m.latency.get(op, [])})
            key = "ok" if outcome == "OK" else outcome
            entry["outcomes"][key] = entry["outcomes"].get(key, 0) + n
        return ops

    def _wait_exit(self, slot: Slot, done: Callable[[Slot], None]) -> None:
        if slot.handle is None:
            done(slot)
        else:
            slot.on_exit.append(done)

    # -- operations --------------------------------------------------------------------------

    def op_create_space(self, space: str, args: dict[str, Any], reply: Reply, fail: Fail) -> None:
        space = validate_space_id(args.get("id", space), "body" if "id" in args else "field")
        unknown = sorted(set(args) - {"id", "dimension", "settings"})
        if unknown:
            raise InvalidArgument(f"create_space: unknown argument(s) {', '.join(unknown)}", {"unknown": unknown})
        dimension = args.get("dimension") or self.sup.cfg["spaces.dimension"]
        settings = args.get("settings") or {}
        if not isinstance(settings, dict):
            raise InvalidArgument("settings must be an object", {"field": "settings"})
        if "dimension" in settings:
            raise InvalidArgument("give dimension as its own field, not inside settings", {"field": "settings"})
        SpaceSettings.from_dict({**settings, "dimension": dimension})   # validate now, not at first use
        existing = self.sup.registry.get(space)
        if existing is None and len(self.sup.slots) >= self.sup.cfg["limits.max_spaces"]:
            raise QuotaExceeded(f"this deployment already has {len(self.sup.slots)} spaces "
                                f"(limits.max_spaces = {self.sup.cfg['limits.max_spaces']})")
        record, created = self.sup.registry.create(space, dimension=dimension, settings=settings)
        slot = self.sup.slot(record)
        reply({"space": self.status_of(slot), "created": created})

    def op_list_spaces(self, space: str, args: dict[str, Any], reply: Reply, fail: Fail) -> None:
        for record in self.sup.registry.list():
            self.sup.slot(record)
        reply([self.status_of(s) for s in sorted(self.sup.slots.values(), key=lambda s: s.space)])

    def op_get_space(self, space: str, args: dict[str, Any], reply: Reply, fail: Fail) -> None:
        reply(self.status_of(self._slot(space)))

    def op_status(self, space: str, args: dict[str, Any], reply: Reply, fail: Fail) -> None:
        if space:
            reply(self.status_of(self._slot(space)))
            return
        for record in self.sup.registry.list():
            self.sup.slot(record)
        spaces = [self.status_of(s) for s in sorted(self.sup.slots.values(), key=lambda s: s.space)]
        by_state: dict[str, int] = {}
        for s in spaces:
            by_state[s["state"]] = by_state.get(s["state"], 0) + 1
        reply({
            "pid": os.getpid(),
            "uptime_s": time.time() - self.started,
            "data_root": str(self.sup.data_root),
            "active_workers": self.sup.active(),
            "max_active_workers": self.sup.cfg["max_active_workers"],
            "spaces_by_state": by_state,
            "counters": dict(self.sup.counters),
            "spaces": spaces,
        })

    def op_metrics(self, space: str, args: dict[str, Any], reply: Reply, fail: Fail) -> None:
        reply(self.metrics())

    def metrics(self) -> dict[str, Any]:
        """Every metric as one JSON document, labels bounded by ``max_metric_spaces``."""
        sup, router = self.sup, self.sup.router
        now = time.time()
        requests = router.metrics.spaces
        activity = {name: (requests[name].total if name in requests else 0) for name in sup.slots}
        labelled = self.labels.select(activity)
        per_space: dict[str, dict[str, Any]] = {}
        for name, slot in sup.slots.items():
            key = name if name in labelled else OTHER
            entry = per_space.get(key)
            if entry is None:
                entry = per_space[key] = {
                    "requests": {}, "latency": {}, "restarts": {}, "memories_by_tier": {"hot": 0, "warm": 0, "cold": 0},
                    "wal_bytes": 0, "wal_lag_bytes": 0, "rss_bytes": 0, "queue_depth": 0,
                    "fsync": new_histogram(), "states": {}, "checkpoint_age_s": None, "spaces": 0,
                }
            entry["spaces"] += 1
            entry["states"][slot.state.name] = entry["states"].get(slot.state.name, 0) + 1
            m = requests.get(name)
            if m is not None:
                for (op, outcome), n in m.counts.items():
                    k = f"{op}\t{outcome}"
                    entry["requests"][k] = entry["requests"].get(k, 0) + n
                for op, hist in m.latency.items():
                    merge_histogram(entry["latency"].setdefault(op, new_histogram()), hist)
            for reason, n in slot.restart_reasons.items():
                entry["restarts"][reason] = entry["restarts"].get(reason, 0) + n
            info = slot.info
            for tier, n in (info.get("memories_by_tier") or {}).items():
                entry["memories_by_tier"][tier] = entry["memories_by_tier"].get(tier, 0) + n
            live = slot.handle is not None
            for field in ("wal_bytes", "wal_lag_bytes"):
                entry[field] += info.get(field) or 0
            if live:
                entry["rss_bytes"] += info.get("rss_bytes") or 0
            depth = router.depth(name)
            entry["queue_depth"] += depth["queued"] + depth["inflight"] + depth["suspects"]
            merge_histogram(entry["fsync"], sup.carry.fsync(name))
            if key != OTHER and info.get("checkpoint_at"):
                entry["checkpoint_age_s"] = max(0.0, now - info["checkpoint_at"])
        for entry in per_space.values():
            entry["requests"] = [[*k.split("\t"), n] for k, n in entry["requests"].items()]
        by_state: dict[str, int] = {}
        for slot in sup.slots.values():
            by_state[slot.state.name] = by_state.get(slot.state.name, 0) + 1
        return {
            "spaces": per_space,
            "global": {
                "spaces_by_state": by_state,
                "active_workers": sup.active(),
                "spawns": sup.counters["spawns"],
                "hibernations": sup.counters["hibernations"],
                "crashes": sup.counters["crashes"],
                "default_space_fallbacks": sup.counters["fallbacks"],
                "router_queue_depth": sum(len(r.queue) + len(r.suspects) for r in router.routes.values()),
                "router_inflight": sum(len(r.inflight) for r in router.routes.values()),
                "router_rejected": dict(router.rejected),
            },
        }

    def op_drain(self, space: str, args: dict[str, Any], reply: Reply, fail: Fail) -> None:
        self._stop(space, State.STOPPED, "drain requested", reply)

    def op_hibernate(self, space: str, args: dict[str, Any], reply: Reply, fail: Fail) -> None:
        self._stop(space, State.HIBERNATED, "hibernate requested", reply)

    def _stop(self, space: str, target: State, reason: str, reply: Reply) -> None:
        slot = self._slot(space)
        if slot.handle is None:
            reply(self.status_of(slot))
            return
        self._wait_exit(slot, lambda s: reply(self.status_of(s)))
        self.sup.drain(slot, target, reason)

    def op_restart(self, space: str, args: dict[str, Any], reply: Reply, fail: Fail) -> None:
        """Drain the worker (if any), start a new one, answer when it is READY (or FAILED)."""
        slot = self._slot(space)
        if slot.state is State.DELETING:
            raise SpaceUnavailable(f"memory space {space!r} is being deleted", {"space": space})
        _refuse_while_repairing(slot, "restart")

        def answer(s: Slot) -> None:
            reply(self.status_of(s))

        def start(s: Slot) -> None:
            s.crashes.clear()
            s.backoff_s = 0.0
            s.on_ready.append(answer)
            self.sup.start(s, "restart requested")

        if slot.handle is None:
            start(slot)
        else:
            self._wait_exit(slot, start)
            self.sup.drain(slot, State.STOPPED, "restart requested")

    def op_repair(self, space: str, args: dict[str, Any], reply: Reply, fail: Fail) -> None:
        """Recover a space's WAL up to its first corruption (a copy of every changed file is kept),
        then start it again if it was FAILED (or crashed, or requests wait for it).

        The repair runs on a job thread, so routing for every other space goes on meanwhile;
        the answer comes when it has finished. While it runs the space cannot start (its
        requests, a restart or a delete are answered SPACE_UNAVAILABLE, "being repaired") and a
        second repair of it is refused the same way. A repair that raises is answered with its
        error; the space keeps its state (a crashed one gets the restart it was due).
        """
        slot = self._slot(space)
        _refuse_while_repairing(slot, "repair")
        if slot.state is State.DELETING:
            raise SpaceUnavailable(f"memory space {space!r} is being deleted", {"space": space})
        if slot.handle is not None:
            raise SpaceUnavailable(
                f"memory space {space!r} is running ({slot.state.name}); drain it first "
                f"(`memspace space drain {space}`)", {"space": space, "state": slot.state.name})
        directory = self.sup.space_dir(space)
        if not directory.exists():
            self._repaired(slot, {"changed": False, "message": "no files yet"}, reply)
            return
        slot.repairing = True
        # a start already promised (waiting for a worker slot, or deferred to a later loop step)
        # would open the files under the repair; the repair starts the space itself when done
        for pending in (self.sup.waiting, self.sup.deferred):
            if space in pending:
                pending.remove(space)

        def done(report: Any, error: BaseException | None) -> None:
            slot.repairing = False
            if error is None:
                self._repaired(slot, report, reply)
                return
            log.error("repair of space %s failed: %s", space, error)
            if slot.state is State.BACKOFF and not self.sup.shutting_down:
                self.sup.start(slot, "restart after crash")   # its restart timer fired during the repair
            fail(error if isinstance(error, MemspaceError)
                 else Internal(f"repair of memory space {space!r} failed: {error}", {"space": space}))

        def run() -> dict[str, Any]:
            from memspace.storage.repair import repair_space

            faults.hold_repair(space)   # a test's seam (off unless its env var is set)
            return repair_space(directory)

        self.jobs.submit(f"repair {space}", run, done)

    def _repaired(self, slot: Slot, report: dict[str, Any], reply: Reply) -> None:
        slot.crashes.clear()
        slot.backoff_s = 0.0
        slot.last_error = None
        wanted = slot.state in (State.FAILED, State.BACKOFF) or self.sup.router.busy(slot.space)
        if wanted and slot.handle is None and not self.sup.shutting_down:
            slot.on_ready.append(lambda s: reply({"repair": report, "space": self.status_of(s)}))
            self.sup.start(slot, "repaired")
        else:
            reply({"repair": report, "space": self.status_of(slot)})

    def op_delete_space(self, space: str, args: dict[str, Any], reply: Reply, fail: Fail) -> None:
        """Tombstone -> drain -> remove the directory -> receipt (what was removed)."""
        slot = self._slot(space)
        if slot.state is State.DELETING:
            raise SpaceUnavailable(f"memory space {space!r} is already being deleted", {"space": space})
        _refuse_while_repairing(slot, "delete")
        running = slot.handle is not None
        slot.record = self.sup.registry.tombstone(space)
        self.sup._set(slot, State.DELETING, "delete requested")  # any -> DELETING
        self.sup.waiting = type(self.sup.waiting)(s for s in self.sup.waiting if s != space)

        def finish(s: Slot) -> None:
            try:
                # a worker that ran reported its final count in BYE; otherwise the last clean exit did
                reply(self.finish_delete(s.space, s.info.get("memories") if running else None))
            except MemspaceError as e:
                fail(e)

        if slot.handle is None:
            self.sup.router.fail(space, SpaceUnavailable(f"memory space {space!r} is being deleted"))
            finish(slot)
        else:
            self._wait_exit(slot, finish)
            self.sup.router.hold(space)
            self.sup.router.send_control(space, "stop")
            slot.drain_deadline = self.sup.clock.monotonic() + self.sup.cfg["drain_timeout_s"]
            self.sup._timer(slot.drain_deadline, "delete_timeout", space)

    def finish_delete(self, space: str, memories: int | None) -> dict[str, Any]:
        directory = self.sup.space_dir(space)
        files, size = 0, 0
        if memories is None:
            memories = _last_known_memories(directory)
        if directory.exists():
            for root, _, names in os.walk(directory):
                for name in names:
                    files += 1
                    try:
                        size += os.lstat(os.path.join(root, name)).st_size
                    except OSError:
                        pass
            shutil.rmtree(directory)
        self.sup.registry.remove(space)
        self.sup.slots.pop(space, None)
        self.sup.carry.forget(space)
        self.sup.router.metrics.spaces.pop(space, None)
        self.sup.router.fail(space, SpaceNotFound(f"memory space {space!r} was deleted"), forget=True)
        log.info("space %s deleted: %s memories, %d files, %d bytes", space, memories, files, size)
        return {"space": space, "deleted": True, "memories": memories, "files": files, "bytes": size}


def _refuse_while_repairing(slot: Slot, what: str) -> None:
    if slot.repairing:
        raise SpaceUnavailable(
            f"memory space {slot.space!r} is being repaired; retry the {what} when the repair has answered",
            {"space": slot.space, "state": slot.state.name, "repairing": True, "retry_after_s": 5})


def _last_known_memories(directory: Path) -> int | None:
    """Memories recorded at the worker's last clean exit (``last_stats.json``), if any."""
    try:
        return int(orjson.loads((directory / "last_stats.json").read_bytes())["memories"])
    except (OSError, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return None
