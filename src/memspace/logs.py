"""Logging set-up shared by every memspace process: text or JSON lines, each with space id and pid."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import orjson


class _Context(logging.Filter):
    def __init__(self, space: str | None, role: str) -> None:
        super().__init__()
        self.space = space
        self.role = role

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "space"):
            record.space = self.space or "-"
        record.role = self.role
        record.pid = os.getpid()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "role": getattr(record, "role", "-"),
            "space": getattr(record, "space", "-"),
            "pid": record.process,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


TEXT_FORMAT = "%(asctime)s %(levelname)s %(role)s[%(pid)d] space=%(space)s %(name)s: %(message)s"


def configure(fmt: str = "text", level: str = "info", *, space: str | None = None, role: str = "worker",
              stream: Any = None) -> None:
    """(Re)configure the root logger of this process. Every line names the space and the pid."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(_Context(space, role))
    root.addHandler(handler)
    root.setLevel(level.upper())
