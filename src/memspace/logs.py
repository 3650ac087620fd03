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
              stream: Any = None, file: str | None = None) -> None:
    """(Re)configure the root logger of this process. Every line names the space and the pid.

    ``file``: also append to this path (every memspace process of a deployment appends to
    the same file; each record is one ``write`` on an O_APPEND descriptor, so lines do not
    interleave). Rotate it with ``copytruncate`` (logrotate) - no process reopens it.
    """
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    formatter = JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)]
    if file:
        os.makedirs(os.path.dirname(os.path.abspath(file)), exist_ok=True)
        handlers.append(logging.FileHandler(file, mode="a", encoding="utf-8", delay=True))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(_Context(space, role))
        root.addHandler(handler)
    root.setLevel(level.upper())


def log_file(cfg: Any) -> str | None:
    """The shared log file of a deployment (``log.file``), or None when logging to stderr only."""
    value = cfg["log.file"]
    if value == "-":
        return None
    return value or os.path.join(os.path.abspath(cfg["data_root"]), "logs", "memspace.log")
