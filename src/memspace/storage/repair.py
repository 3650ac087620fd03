"""Repairing a space's files: recover everything before the first WAL corruption.

The WAL module does the work (:func:`memspace.storage.wal.repair`: every file
it changes or moves is copied to ``wal/repair-<time>/`` first); this adds the
space's own knowledge: the newest snapshot's LSN, so WAL gaps the snapshot
covers are not mistaken for damage.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from memspace.storage import wal as wal_mod
from memspace.storage.snapshot import list_snapshots


def snapshot_lsn(directory: str | os.PathLike[str]) -> int | None:
    snaps = list_snapshots(Path(directory) / "snapshots")
    return snaps[-1][0] if snaps else None


def repair_space(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Repair the WAL of the space in ``directory``; returns the report as a dict (JSON-safe)."""
    root = Path(directory)
    report = wal_mod.repair(root / "wal", start_seq=snapshot_lsn(root))
    out = dataclasses.asdict(report)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in out.items()}


def scan_space(directory: str | os.PathLike[str]) -> dict[str, Any]:
    root = Path(directory)
    report = wal_mod.scan(root / "wal", start_seq=snapshot_lsn(root))
    out = dataclasses.asdict(report)
    return _jsonable(out)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
