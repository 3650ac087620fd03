"""``memspace diagnose``: one file to attach to a bug report.

The bundle (a ``.tar.gz``) holds:

``status.json``         the server's status of every space (or why it could not be had)
``metrics.json``        the metrics document the server exposes (same source as /metrics)
``config.json``         the resolved configuration with the source of each value; values of
                        settings whose name suggests a secret (token, secret, password, key)
                        are replaced by ``"***"``
``logs/memspace.log``   the last lines of the deployment log file
``spaces.json``         per space directory: files and bytes by part (wal, snapshots, warm, cold)
``environment.json``    versions of memspace, Python and the main libraries, the platform

It works without a running server (then only the files on disk are described).
"""

from __future__ import annotations

import io
import os
import platform
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import orjson
import typer

from memspace import config as config_mod
from memspace.cli_common import JsonOpt, emit_json, errors, opts, say
from memspace.logs import log_file

SECRET_WORDS = ("token", "secret", "password", "key")
LOG_TAIL_BYTES = 2 * 1024 * 1024


def register(app: typer.Typer) -> None:
    app.command()(diagnose)


def diagnose(
    ctx: typer.Context,
    output: str | None = typer.Argument(None, metavar="[FILE]",
                                        help="Bundle to write (default memspace-diagnose-<time>.tar.gz)."),
    config: str | None = typer.Option(None, "--config", help="TOML configuration file ($MEMSPACE_CONFIG)."),
    data_root: str | None = typer.Option(None, "--data-root",
                                         help="Data directory (default: the server's, else the config's)."),
    json: bool = JsonOpt,
) -> None:
    """Write a diagnostics bundle (status, config with secrets masked, recent logs, disk use)."""
    o = opts(ctx, None, json)
    with errors(o):
        cfg = config_mod.load(config, overrides={"data_root": data_root})
        files: dict[str, Any] = {}
        status: dict[str, Any] | None = None
        try:
            client = o.client()
            status = client.status()
            files["status.json"] = status
            files["metrics.json"] = client.call("", "metrics")
        except Exception as e:  # noqa: BLE001 - a bundle without a server is still useful
            files["status.json"] = {"error": f"{type(e).__name__}: {e}"}
        root = Path(data_root or (status or {}).get("data_root") or cfg["data_root"]).resolve()
        files["config.json"] = masked_config(cfg)
        files["spaces.json"] = disk_use(root)
        files["environment.json"] = environment()
        log_path = log_file(cfg.replace({"data_root": str(root)}))
        target = Path(output or f"memspace-diagnose-{time.strftime('%Y%m%d-%H%M%S')}.tar.gz")
        write_bundle(target, files, Path(log_path) if log_path else None)
        summary = {"bundle": str(target.resolve()), "bytes": target.stat().st_size, "data_root": str(root),
                   "server": "ok" if status is not None else files["status.json"]["error"]}
        if o.json:
            emit_json(summary)
        else:
            say(o, f"wrote {summary['bundle']} ({summary['bytes']} bytes)")


def masked_config(cfg: config_mod.Config) -> dict[str, Any]:
    out = {}
    for key, value in cfg.items():
        name = key.rpartition(".")[2]
        secret = any(word in name for word in SECRET_WORDS) and value not in ("", None)
        out[key] = {"value": "***" if secret else value, "source": cfg.source(key)}
    return out


def disk_use(root: Path) -> dict[str, Any]:
    spaces: dict[str, Any] = {}
    base = root / "spaces"
    if not base.is_dir():
        return {"data_root": str(root), "spaces": spaces, "note": "no spaces directory"}
    for space_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        parts: dict[str, dict[str, int]] = {}
        for dirpath, _, names in os.walk(space_dir):
            rel = Path(dirpath).relative_to(space_dir)
            part = rel.parts[0] if rel.parts else "."
            entry = parts.setdefault(part, {"files": 0, "bytes": 0})
            for name in names:
                try:
                    entry["bytes"] += os.lstat(os.path.join(dirpath, name)).st_size
                    entry["files"] += 1
                except OSError:
                    pass
        spaces[space_dir.name] = {"parts": parts, "bytes": sum(p["bytes"] for p in parts.values())}
    return {"data_root": str(root), "spaces": spaces}


def environment() -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for dist in ("memspace", "numpy", "pyzmq", "orjson", "grpcio", "fastapi", "uvicorn", "prometheus-client"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    return {"python": sys.version, "platform": platform.platform(), "versions": versions,
            "pid": os.getpid(), "at": time.time()}


def write_bundle(target: Path, files: dict[str, Any], log_path: Path | None) -> None:
    tmp = target.with_name(target.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for name, value in files.items():
            _add(tar, name, orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str))
        if log_path is not None and log_path.exists():
            with open(log_path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - LOG_TAIL_BYTES))
                data = f.read()
            if size > LOG_TAIL_BYTES:   # start at a whole line
                data = data[data.find(b"\n") + 1:]
            _add(tar, "logs/memspace.log", data)
        else:
            _add(tar, "logs/README.txt", f"no log file at {log_path}\n".encode())
    os.replace(tmp, target)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))

