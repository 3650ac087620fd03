"""The writer process of the crash tests (run as a script), and the memory contents it writes.

``python crash_child.py DIR SEED FIRST_STEP MODE OVERRIDES_JSON`` opens the space in DIR and
writes until it is killed. Before each operation it prints ``I <json intent>`` and, only after
the call has returned, ``A <step>``: every ``A`` line is an acknowledged write. Each line is
one ``write(2)`` to an unbuffered pipe, so a kill never leaves half a line that looks whole.

MODE ``writes``: remember (one or a batch), forget, link, each with request id ``w<step>``, and
recalls (whose reinforcement is not acknowledged). MODE ``checkpoints``: the same, with a checkpoint after most steps.

The contents of memory ``id`` are a function of the id (:func:`item`), so the parent can check
every field of what it finds without being told.
"""

from __future__ import annotations

import json
import os
import random
import sys
import zlib
from typing import Any

import numpy as np

DIM = 16


def vector(memory_id: str) -> list[float]:
    rng = np.random.default_rng(zlib.crc32(memory_id.encode()))
    return [float(x) for x in rng.normal(size=DIM)]


def item(memory_id: str, step: int) -> dict[str, Any]:
    return {"id": memory_id, "embedding": vector(memory_id), "content": f"content of {memory_id}",
            "tags": [f"t{step % 3}"], "metadata": {"step": step, "id": memory_id},
            "confidence": round(0.05 + (step % 10) / 10, 2)}


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def main(argv: list[str]) -> None:
    from memspace import config
    from memspace.storage.space import open_space

    directory, seed, step, mode, overrides = argv[0], int(argv[1]), int(argv[2]), argv[3], json.loads(argv[4])
    rng = random.Random(seed)
    space = open_space(directory, dimension=DIM, config=config.load(env={}, overrides=overrides))
    alive: list[str] = []
    cursor = None
    while True:
        page = space.list(limit=1000, cursor=cursor)
        alive += [m.id for m in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    _say(f"S {len(alive)}")
    for _ in range(100_000):          # bounded: the parent kills it long before
        roll = rng.random()
        intent: dict[str, Any]
        if roll < 0.45 or len(alive) < 4:
            mid = f"s{step}"
            intent = {"op": "remember", "step": step, "ids": [mid]}
            _say("I " + json.dumps(intent))
            space.remember(**item(mid, step), request_id=f"w{step}")
            alive.append(mid)
        elif roll < 0.65:
            ids = [f"s{step}-{j}" for j in range(rng.randint(2, 5))]
            intent = {"op": "batch", "step": step, "ids": ids}
            _say("I " + json.dumps(intent))
            space.remember_batch([item(i, step) for i in ids], request_id=f"w{step}")
            alive += ids
        elif roll < 0.78:
            ids = rng.sample(alive, rng.choice([1, 1, 2]))
            intent = {"op": "forget", "step": step, "ids": ids}
            _say("I " + json.dumps(intent))
            if len(ids) == 1:
                space.forget(ids[0], request_id=f"w{step}")
            else:
                space.forget(ids=ids, request_id=f"w{step}")
            alive = [i for i in alive if i not in ids]
        elif roll < 0.93:
            source, target = rng.sample(alive, 2)
            weight = round(rng.uniform(0.1, 1.0), 3)
            intent = {"op": "link", "step": step, "source": source, "target": target, "weight": weight}
            _say("I " + json.dumps(intent))
            space.link(source, target, weight, request_id=f"w{step}")
        else:
            intent = {"op": "recall", "step": step}
            _say("I " + json.dumps(intent))
            space.recall(embedding=vector(rng.choice(alive)), k=3, tiers=["hot", "warm", "cold"])
        _say(f"A {step}")
        step += 1
        if mode == "checkpoints" and rng.random() < 0.6:
            _say("I " + json.dumps({"op": "checkpoint", "step": step}))
            space.checkpoint()
            _say(f"A {step}")
            step += 1


if __name__ == "__main__":
    main(sys.argv[1:])
