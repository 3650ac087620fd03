"""The change-feed poller shared by the gateways, against a scripted router: passive polls, waiting
through a sleeping space (woken by a lifecycle message or the fallback re-check), resuming in order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from memspace import errors
from memspace.api.feed import EventsPoller, is_asleep


def asleep(last_seq: int | None = None) -> errors.SpaceUnavailable:
    details: dict[str, Any] = {"space": "s", "state": "HIBERNATED", "asleep": True}
    if last_seq is not None:
        details["last_seq"] = last_seq
    return errors.SpaceUnavailable("memory space 's' is HIBERNATED", details)


class Router:
    """Answers ``events`` calls from a script; records (after, wait_ms, passive) of each call."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.calls: list[tuple[int, int, bool]] = []
        self.called = asyncio.Event()

    async def call(self, space: str, op: str, body: Any = None, *, passive: bool = False,
                   timeout: float | None = None) -> Any:
        assert (space, op) == ("s", "events") and timeout is not None and timeout > body["wait_ms"] / 1000
        self.calls.append((body["after"], body["wait_ms"], passive))
        self.called.set()
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


class Hub:
    """The LifecycleHub interface, driven by the test."""

    def __init__(self) -> None:
        self.listeners: dict[str, set[Any]] = {}

    def listen(self, space: str, listener: Any) -> None:
        self.listeners.setdefault(space, set()).add(listener)

    def unlisten(self, space: str, listener: Any) -> None:
        self.listeners[space].discard(listener)

    def publish(self, space: str, new: str) -> None:
        for listener in list(self.listeners.get(space, ())):
            listener({"type": "lifecycle", "space": space, "old": "HIBERNATED", "new": new})


def reply(*seqs: int, last_seq: int | None = None, gap: bool = False) -> dict[str, Any]:
    events = [{"seq": s, "type": "remember", "memories": [{"id": f"m{s}"}]} for s in seqs]
    return {"events": events, "last_seq": last_seq if last_seq is not None else max(seqs, default=0), "gap": gap}


def poller(router: Router, hub: Hub | None, after: int = 0, **kwargs: Any) -> EventsPoller:
    return EventsPoller(router.call, "s", after, hub=hub, topic="s", wait_ms=25_000, limit=100,  # type: ignore[arg-type]
                        margin_s=5.0, **kwargs)


def test_first_call_is_ordinary_then_every_poll_is_passive() -> None:
    async def main() -> list[tuple[int, int, bool]]:
        router = Router([reply(3, 4), reply(), reply(7, last_seq=9)])
        async with asyncio.timeout(10):
            with poller(router, None, after=2) as p:
                batches = [await p.next() for _ in range(3)]
        assert [[e["seq"] for e in b.events] for b in batches] == [[3, 4], [], [7]]
        assert [b.after for b in batches] == [2, 4, 4]
        assert p.after == 7
        return router.calls

    # an empty reply moves the position to last_seq (here 0 < 4, so it stays at 4)
    assert asyncio.run(main()) == [(2, 0, False), (4, 25_000, True), (4, 25_000, True)]


def test_an_empty_reply_moves_the_position_past_records_that_are_not_changes() -> None:
    async def main() -> list[tuple[int, int, bool]]:
        router = Router([reply(last_seq=12), reply(13)])
        async with asyncio.timeout(10):
            with poller(router, None, after=5, woken=True) as p:
                assert (await p.next()).events == []
                assert [e["seq"] for e in (await p.next()).events] == [13]
        return router.calls

    assert asyncio.run(main()) == [(5, 25_000, True), (12, 25_000, True)]


def test_asleep_waits_for_a_lifecycle_message_then_resumes_in_order() -> None:
    async def main() -> None:
        hub = Hub()
        router = Router([reply(1), asleep(), reply(2, 3)])
        async with asyncio.timeout(10):
            with poller(router, hub, recheck_s=3600.0) as p:
                assert [e["seq"] for e in (await p.next()).events] == [1]
                router.called.clear()
                task = asyncio.create_task(p.next())
                await router.called.wait()          # the passive poll was answered "asleep"
                for _ in range(20):                 # ... and nothing polls again on its own
                    await asyncio.sleep(0)
                assert len(router.calls) == 2 and not task.done()
                hub.publish("other", "READY")       # another space's transition is not ours
                for _ in range(20):
                    await asyncio.sleep(0)
                assert len(router.calls) == 2
                hub.publish("s", "READY")
                batch = await task
            assert hub.listeners["s"] == set()      # closed: no longer listening
        assert [e["seq"] for e in batch.events] == [2, 3] and batch.after == 1
        assert router.calls == [(0, 0, False), (1, 25_000, True), (1, 25_000, True)]

    asyncio.run(main())


def test_a_lost_lifecycle_message_costs_one_recheck_not_the_feed() -> None:
    async def main() -> None:
        router = Router([reply(1), asleep(), asleep(), reply(2)])
        async with asyncio.timeout(10):
            with poller(router, None, recheck_s=0.05) as p:   # no hub at all: only the re-check
                await p.next()
                batch = await p.next()
        assert [e["seq"] for e in batch.events] == [2]
        assert [c[2] for c in router.calls] == [False, True, True, True]

    asyncio.run(main())


def test_writes_missed_while_the_space_was_awake_are_fetched_with_one_waking_call() -> None:
    async def main() -> None:
        # the space woke and slept again before this feed polled: the router says its last
        # worker wrote up to 6, past the feed's position 4
        router = Router([reply(4), asleep(last_seq=6), reply(5, 6), asleep(last_seq=6)])
        async with asyncio.timeout(10):
            with poller(router, None, recheck_s=3600.0) as p:
                await p.next()
                batch = await p.next()
                assert [e["seq"] for e in batch.events] == [5, 6]
                waiting = asyncio.create_task(p.next())
                while len(router.calls) < 4:
                    await router.called.wait()
                    router.called.clear()
                for _ in range(20):
                    await asyncio.sleep(0)
                # nothing new past 6: it sleeps instead of waking the space again
                assert not waiting.done() and len(router.calls) == 4
                waiting.cancel()
        assert router.calls == [(0, 0, False), (4, 25_000, True), (4, 0, False), (6, 25_000, True)]

    asyncio.run(main())


def test_other_errors_reach_the_feed_and_the_position_holds() -> None:
    async def main() -> None:
        router = Router([reply(1), errors.SpaceUnavailable("restarting", {"retry_after_s": 1}), reply(2)])
        async with asyncio.timeout(10):
            with poller(router, None) as p:
                await p.next()
                with pytest.raises(errors.SpaceUnavailable) as info:
                    await p.next()
                assert not is_asleep(info.value)
                assert [e["seq"] for e in (await p.next()).events] == [2]
        assert [c[0] for c in router.calls] == [0, 1, 1]

    asyncio.run(main())


def test_a_reply_of_the_wrong_shape_is_internal() -> None:
    async def main() -> None:
        router = Router([["not", "a", "reply"]])
        with poller(router, None) as p, pytest.raises(errors.Internal, match="unexpected shape"):
            await p.next()

    asyncio.run(main())
