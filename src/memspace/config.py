"""Settings, each declared once: name, type, default, environment variable, documentation.

Everything else is generated from :data:`SETTINGS`: the commented
``conf/memspace.toml`` (:func:`render_toml`), ``docs/config.md``
(:func:`render_markdown`) and the ``memspace serve`` flags that override a
setting. Precedence, lowest first: built-in default < TOML file
(``--config`` / ``MEMSPACE_CONFIG``) < environment ``MEMSPACE_<SECTION>_<KEY>``
(top-level keys: ``MEMSPACE_<KEY>``) < explicit overrides (command-line flags).

A key that is not declared, or a value of the wrong type, is an error that
names the key and where the value came from; nothing is guessed.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memspace.errors import InvalidArgument


@dataclass(frozen=True)
class Setting:
    key: str                      # dotted: "wal.fsync" or "data_root"
    type: type                    # str, int, float or bool
    default: Any
    doc: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None

    @property
    def section(self) -> str:
        return self.key.rpartition(".")[0]

    @property
    def name(self) -> str:
        return self.key.rpartition(".")[2]

    @property
    def env(self) -> str:
        return "MEMSPACE_" + self.key.replace(".", "_").upper()

    def parse(self, raw: Any, source: str) -> Any:
        """Convert ``raw`` (TOML value or env string) to this setting's type, or raise."""
        value = raw
        try:
            if self.type is bool:
                if isinstance(raw, str):
                    low = raw.strip().lower()
                    if low in ("1", "true", "yes", "on"):
                        value = True
                    elif low in ("0", "false", "no", "off"):
                        value = False
                    else:
                        raise ValueError(raw)
                elif not isinstance(raw, bool):
                    raise ValueError(raw)
            elif self.type is int:
                if isinstance(raw, bool):
                    raise ValueError(raw)
                value = int(raw) if isinstance(raw, (int, str)) else _int_from_float(raw)
            elif self.type is float:
                if isinstance(raw, bool):
                    raise ValueError(raw)
                value = float(raw)
            else:
                if not isinstance(raw, str):
                    raise ValueError(raw)
                value = raw
        except ValueError:
            raise InvalidArgument(
                f"setting {self.key} from {source}: {raw!r} is not a valid {self.type.__name__}",
                {"setting": self.key, "source": source},
            ) from None
        if self.choices is not None and value not in self.choices:
            raise InvalidArgument(
                f"setting {self.key} from {source}: {value!r} is not one of {', '.join(self.choices)}",
                {"setting": self.key, "source": source},
            )
        if self.minimum is not None and value < self.minimum:
            raise InvalidArgument(
                f"setting {self.key} from {source}: {value!r} is below the minimum {self.minimum}",
                {"setting": self.key, "source": source},
            )
        return value


def _int_from_float(raw: Any) -> int:
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    raise ValueError(raw)


S = Setting
SETTINGS: tuple[Setting, ...] = (
    # -- where things live and how spaces are named
    S("data_root", str, "./memspace-data", "Directory holding registry.sqlite, endpoints.json and spaces/<id>/."),
    S("default_space", str, "default", "Space used by clients that name none; created at first start."),
    S("require_explicit_space", bool, False,
      "Refuse requests that name no space (400 SPACE_REQUIRED) instead of using the default space."),
    S("auto_create_spaces", bool, False, "Create a valid but unknown space on first use instead of 404 SPACE_NOT_FOUND."),
    # -- worker lifecycle
    S("max_active_workers", int, 256,
      "Most worker processes alive at once; the least recently used is hibernated to make room.", minimum=1),
    S("idle_hibernate_s", float, 300.0, "Hibernate a worker after this many seconds without requests (0 = never).",
      minimum=0),
    S("heartbeat_s", float, 1.0, "Interval between worker heartbeats.", minimum=0.01),
    S("heartbeat_liveness", int, 3, "Missed heartbeats after which a worker counts as hung and is killed.", minimum=1),
    S("start_timeout_s", float, 30.0,
      "How long a request waits for its space to start before SPACE_UNAVAILABLE.", minimum=0.1),
    S("request_timeout_s", float, 30.0, "Default per-request deadline (DEADLINE_EXCEEDED after it).", minimum=0.01),
    S("restart_backoff_initial_s", float, 0.1, "First restart delay after a crash; doubles per crash.", minimum=0),
    S("restart_backoff_max_s", float, 30.0, "Upper bound of the restart delay (jitter is added).", minimum=0),
    S("restart_intensity.n", int, 5, "Crashes within restart_intensity.window_s that put a space in FAILED.",
      minimum=1),
    S("restart_intensity.window_s", float, 60.0, "Window for counting crashes.", minimum=0.1),
    S("drain_timeout_s", float, 30.0, "Time a draining worker gets to finish; then SIGTERM, then SIGKILL.",
      minimum=0),
    S("worker_memory_limit_mb", int, 0, "Address-space limit (RLIMIT_AS) per worker in MiB; 0 = unlimited.",
      minimum=0),
    S("worker_open_files", int, 1024, "Open-file limit (RLIMIT_NOFILE) per worker.", minimum=16),
    S("router_queue_per_space", int, 1000,
      "Real requests waiting for or running in one space's worker (change-feed polls not counted); "
      "more are answered OVERLOADED.", minimum=1),
    S("router_passive_per_space", int, 1000,
      "Change-feed long polls (SSE, gRPC Subscribe, `memspace events`) open on one space, bounded apart "
      "from router_queue_per_space so open feeds never make real requests OVERLOADED; more are answered "
      "OVERLOADED and their feeds poll again later.", minimum=1),
    # -- durability
    S("wal.fsync", str, "always",
      "always: a write is acknowledged only after its record is fsynced (group commit); "
      "interval: fsync every wal.fsync_interval_ms; never: leave it to the OS.",
      choices=("always", "interval", "never")),
    S("wal.fsync_interval_ms", int, 50, "fsync period when wal.fsync = interval.", minimum=1),
    S("wal.segment_mb", float, 64.0, "Size at which a WAL segment is closed and a new one started.", minimum=0.01),
    S("checkpoint_every_mb", float, 64.0,
      "Write a snapshot (and drop WAL segments it covers) after this much WAL.", minimum=0.01),
    # -- tiers
    S("tiers.hot_capacity", int, 100_000, "Memories kept in RAM (float32, exact search) per space.", minimum=1),
    S("tiers.warm_capacity", int, 1_000_000,
      "Memories kept on disk memory-mapped at reduced precision; beyond it they go cold (compressed).", minimum=0),
    S("tiers.ann_threshold", int, 0,
      "Hot-tier size above which an approximate index (hnswlib, extra 'ann') is used; 0 = exact only.",
      minimum=0),
    # -- defaults for new spaces (a space keeps the settings it was created with, in space.json)
    S("spaces.dimension", int, 384, "Embedding dimension of a space created without one.", minimum=1),
    S("spaces.embedder", str, "hashing",
      "Embedder for text without an embedding: hashing (built in, no download) or model2vec (extra 'model').",
      choices=("hashing", "model2vec")),
    S("spaces.dedup_threshold", float, 0.95, "Cosine at or above which a new memory merges into an existing one.",
      minimum=0),
    S("spaces.link_threshold", float, 0.7, "Cosine above which a new memory is linked to a neighbour.", minimum=0),
    S("spaces.max_auto_links", int, 5, "Neighbours a new memory is linked to at most.", minimum=0),
    S("spaces.decay", str, "exponential", "Confidence decay: none, exponential, power_law or two_component.",
      choices=("none", "exponential", "power_law", "two_component")),
    S("spaces.half_life_s", float, 30 * 86400.0, "Decay half-life (seconds) for exponential decay.", minimum=1),
    S("spaces.decay_floor", float, 0.05, "Decayed confidence never falls below this.", minimum=0),
    # -- network
    S("http.bind", str, "127.0.0.1:7077", "HTTP gateway (REST, SSE, /metrics) address; port 0 picks one."),
    S("http.sse_heartbeat_s", float, 15.0,
      "Seconds of silence after which a change-feed stream sends a `: ping` comment (keeps proxies open).",
      minimum=0.05),
    S("grpc.bind", str, "127.0.0.1:7078", "gRPC address; port 0 picks one."),
    S("zmq.bind", str, "tcp://127.0.0.1:7079", "Native zmq client endpoint of the router; port 0 picks one."),
    # -- limits
    S("limits.max_request_bytes", int, 8 * 1024 * 1024, "Largest request body or frame accepted.", minimum=1024),
    S("limits.max_content_bytes", int, 64 * 1024, "Largest memory content (UTF-8 bytes).", minimum=1),
    S("limits.max_k", int, 1000, "Largest k a recall may ask for.", minimum=1),
    S("limits.max_batch", int, 1000, "Most memories in one batch write.", minimum=1),
    S("limits.max_memories_per_space", int, 0, "Quota of memories per space; 0 = unlimited.", minimum=0),
    S("limits.max_spaces", int, 10_000, "Most spaces a deployment may register.", minimum=1),
    # -- observability and access
    S("max_metric_spaces", int, 100,
      "Spaces that keep their own metric label; the rest are summed under memory_space=\"__other__\".", minimum=1),
    S("log.format", str, "text", "Log line format.", choices=("text", "json")),
    S("log.level", str, "info", "Log level.", choices=("debug", "info", "warning", "error")),
    S("log.file", str, "", "Also append every process's log lines to this file; empty = "
      "<data_root>/logs/memspace.log, \"-\" = standard error only."),
    S("auth.mode", str, "none", "none: open on loopback; token: bearer tokens from auth.tokens_file.",
      choices=("none", "token")),
    S("auth.tokens_file", str, "", "TOML file of [[token]] entries (name, sha256, spaces, admin) for auth.mode = token; "
      "see docs/operations.md."),
)
del S

BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
assert len(BY_KEY) == len(SETTINGS), "a setting is declared twice"


class Config(Mapping[str, Any]):
    """Resolved settings. ``cfg["wal.fsync"]`` or ``cfg.wal.fsync``; immutable."""

    def __init__(self, values: Mapping[str, Any], sources: Mapping[str, str] | None = None) -> None:
        self._values = dict(values)
        self._sources = dict(sources or {})

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._values:
            return self._values[name]
        prefix = name + "."
        sub = {k[len(prefix):]: v for k, v in self._values.items() if k.startswith(prefix)}
        if not sub:
            raise AttributeError(f"no setting or section {name!r}")
        return Config(sub)

    def source(self, key: str) -> str:
        """Where the value of ``key`` came from: default, a file path, an env var, or override."""
        return self._sources.get(key, "default")

    def replace(self, overrides: Mapping[str, Any]) -> Config:
        """A copy with some dotted keys changed (validated like any other source)."""
        values, sources = dict(self._values), dict(self._sources)
        for key, raw in overrides.items():
            if key not in BY_KEY:
                raise InvalidArgument(f"unknown setting {key!r}", {"setting": key})
            values[key] = BY_KEY[key].parse(raw, "override")
            sources[key] = "override"
        return Config(values, sources)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __repr__(self) -> str:
        return f"Config({self._values!r})"


def _flatten(table: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            yield from _flatten(v, key + ".")
        else:
            yield key, v


def load(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Resolve every setting: defaults < file < environment < overrides.

    ``path`` None means ``$MEMSPACE_CONFIG`` if set, else defaults only.
    ``env`` defaults to ``os.environ``.
    """
    env = os.environ if env is None else env
    values = {s.key: s.default for s in SETTINGS}
    sources = {s.key: "default" for s in SETTINGS}
    if path is None and env.get("MEMSPACE_CONFIG"):
        path = env["MEMSPACE_CONFIG"]
    if path is not None:
        p = Path(path)
        try:
            table = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InvalidArgument(f"config file {p} does not exist", {"file": str(p)}) from None
        except tomllib.TOMLDecodeError as e:
            raise InvalidArgument(f"config file {p} is not valid TOML: {e}", {"file": str(p)}) from None
        for key, raw in _flatten(table):
            setting = BY_KEY.get(key)
            if setting is None:
                raise InvalidArgument(f"config file {p}: unknown setting {key!r}", {"file": str(p), "setting": key})
            values[key] = setting.parse(raw, str(p))
            sources[key] = str(p)
    for setting in SETTINGS:
        raw = env.get(setting.env)
        if raw is not None:
            values[setting.key] = setting.parse(raw, f"${setting.env}")
            sources[setting.key] = f"${setting.env}"
    for key, raw in (overrides or {}).items():
        setting = BY_KEY.get(key)
        if setting is None:
            raise InvalidArgument(f"unknown setting {key!r}", {"setting": key})
        if raw is not None:
            values[key] = setting.parse(raw, "override")
            sources[key] = "override"
    return Config(values, sources)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f"{value:.1f}"
    return repr(value)


def render_toml() -> str:
    """The fully commented ``conf/memspace.toml``: every setting at its default."""
    out = [
        "# memspace configuration. Every key is shown at its default.",
        "# Pass with `memspace serve --config FILE` or $MEMSPACE_CONFIG.",
        "# Any key can be overridden by the environment: MEMSPACE_<SECTION>_<KEY>",
        "# (top-level keys: MEMSPACE_<KEY>). Generated from memspace/config.py; edit there.",
        "",
    ]
    current = None
    for setting in sorted(SETTINGS, key=lambda s: (s.section != "", s.section)):
        if setting.section != current:
            current = setting.section
            if current:
                out += ["", f"[{current}]"]
        out.append(f"# {setting.doc}")
        if setting.choices:
            out.append(f"# One of: {', '.join(setting.choices)}.")
        out.append(f"# Environment: {setting.env}")
        out.append(f"{setting.name} = {_toml_value(setting.default)}")
    return "\n".join(out) + "\n"


def render_markdown() -> str:
    """``docs/config.md``: one table row per setting."""
    out = [
        "# Configuration",
        "",
        "Generated from `src/memspace/config.py` (`python -m memspace.config markdown`). "
        "Precedence: default < TOML file (`--config`, `$MEMSPACE_CONFIG`) < environment < command-line flags.",
        "",
        "| key | type | default | environment | meaning |",
        "|---|---|---|---|---|",
    ]
    for s in SETTINGS:
        doc = s.doc + (f" One of: {', '.join(s.choices)}." if s.choices else "")
        out.append(f"| `{s.key}` | {s.type.__name__} | `{_toml_value(s.default)}` | `{s.env}` | {doc} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    import sys

    what = (argv if argv is not None else sys.argv[1:]) or ["toml"]
    sys.stdout.write(render_markdown() if what[0] == "markdown" else render_toml())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
