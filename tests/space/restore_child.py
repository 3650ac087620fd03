"""The writer of the restore crash test (run as a script): ``python restore_child.py DIR``.

Restores batch after batch into the space in DIR until it is killed. Before each batch it
prints ``I <k>``, after ``Space.restore`` returned ``A <k>``: every ``A`` line is an
acknowledged (fsynced) batch. Each line is one ``write(2)`` to an unbuffered pipe.

Batch ``k`` (:func:`batch`) replaces memory ``shared`` and adds ``BATCH - 1`` memories of its
own, each linking forward to the next one and to a memory of batch ``k + 1`` (not there yet),
so a batch applied in part would show.
"""

from __future__ import annotations

import os
import sys
from typing import Any

DIM = 8
BATCH = 6


def batch(k: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [{"id": "shared", "embedding": [1.0] + [0.0] * (DIM - 1), "metadata": {"batch": k},
                                    "access_count": k, "created_at": float(k)}]
    for j in range(1, BATCH):
        vec = [0.0] * DIM
        vec[j % DIM], vec[(k + j) % DIM] = 0.6, 0.8
        if j % DIM == (k + j) % DIM:
            vec[j % DIM] = 1.0
        links = [{"target": f"b{k + 1}-1", "weight": 0.5, "kind": "next-batch"}]
        if j + 1 < BATCH:
            links.append({"target": f"b{k}-{j + 1}", "weight": 0.25, "kind": "next"})
        items.append({"id": f"b{k}-{j}", "embedding": vec, "content": f"batch {k} item {j}", "tags": [f"k{k}"],
                      "metadata": {"batch": k}, "confidence": 0.5, "created_at": 100.0 + k,
                      "last_access": 200.0 + k, "access_count": j, "links": links})
    return items


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def main(directory: str) -> None:
    from memspace import config
    from memspace.storage.space import open_space

    space = open_space(directory, dimension=DIM, config=config.load(env={}, overrides={"wal.fsync": "always"}))
    for k in range(100_000):          # bounded: the parent kills it long before
        _say(f"I {k}")
        space.restore(batch(k), request_id=f"b{k}")
        _say(f"A {k}")


if __name__ == "__main__":
    main(sys.argv[1])
