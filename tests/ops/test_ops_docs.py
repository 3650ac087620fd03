"""The operations documents stay true: the dashboard, docs/metrics.md, a real scrape, operations.md, the unit.

* docs/grafana-dashboard.json parses, has its two template variables, and every PromQL expression
  uses only metric names (and labels) that docs/metrics.md lists;
* docs/render_dashboard.py computes every panel of the dashboard (so docs/dashboard.png matches it);
* every metric docs/metrics.md lists appears in a real /metrics scrape after a little traffic, and
  every memspace metric in the scrape is documented;
* docs/operations.md names only settings, environment variables and commands that exist;
* conf/memspace.service passes ``systemd-analyze verify`` (where systemd-analyze exists).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from memspace import config as config_mod
from memspace.errors import MemoryNotFound, SpaceNotFound
from memspace.testing.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
DASHBOARD = DOCS / "grafana-dashboard.json"

#: What the dashboard must show (operations.md and the PNG refer to these panels).
REQUIRED_PANELS = {
    "Request rate per space (top 10)", "Error ratio per space", "Latency p50 / p99 per space",
    "Memories per tier", "WAL lag (bytes since last checkpoint)", "Checkpoint age", "WAL fsync p99",
    "Worker restarts by reason", "Worker state", "RSS per space", "Queue depth per space", "Spaces by state",
    "Active workers", "Default-space fallbacks",
}
#: Environment variables that are not settings but that the CLI, the client or the service files read.
OTHER_ENV = {"MEMSPACE_CONFIG", "MEMSPACE_URL", "MEMSPACE_SPACE", "MEMSPACE_TIMEOUT", "MEMSPACE_TOKEN", "MEMSPACE_RUN_DIR"}


def documented_metrics() -> dict[str, tuple[str, set[str]]]:
    """docs/metrics.md's tables: name -> (type, labels), implicit labels included."""
    out: dict[str, tuple[str, set[str]]] = {}
    per_space = False
    for line in (DOCS / "metrics.md").read_text().splitlines():
        if line.startswith("## "):
            per_space = line.startswith("## Per space")
        m = re.match(r"\|\s*`(memspace_[a-z0-9_]+)`\s*\|\s*(\w+)\s*\|([^|]*)\|", line)
        if m:
            name, kind, labels = m.group(1), m.group(2), set(re.findall(r"`([a-z_]+)`", m.group(3)))
            if per_space:
                labels.add("memory_space")
            if kind == "histogram":
                labels.add("le")
            out[name] = (kind, labels)
    return out


def base_name(sample: str, documented: dict[str, tuple[str, set[str]]]) -> str | None:
    """The documented metric a sample or series name belongs to (histogram suffixes folded)."""
    if sample in documented:
        return sample
    for suffix in ("_bucket", "_sum", "_count"):
        base = sample.removesuffix(suffix)
        if base != sample and documented.get(base, ("",))[0] == "histogram":
            return base
    return None


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def expressions() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard()["panels"] for t in p["targets"]]


# -- the dashboard ---------------------------------------------------------------------------------


def test_dashboard_parses_with_datasource_and_space_variables():
    d = dashboard()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    space = variables["memory_space"]
    query = space["query"]["query"] if isinstance(space["query"], dict) else space["query"]
    assert query == "label_values(memspace_requests_total, memory_space)"
    assert space["multi"] is True and space["includeAll"] is True
    assert space["datasource"]["uid"] == "${datasource}"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]


def test_dashboard_has_every_required_panel():
    titles = [p["title"] for p in dashboard()["panels"]]
    assert REQUIRED_PANELS <= set(titles), REQUIRED_PANELS - set(titles)


def test_every_promql_expression_uses_documented_metrics_and_labels():
    documented = documented_metrics()
    assert len(documented) >= 20        # the parse found the tables
    checked = 0
    for title, expr in expressions():
        assert expr.count("(") == expr.count(")"), (title, expr)
        names = re.findall(r"\bmemspace_[a-z0-9_]+", expr)
        assert names, (title, expr)
        labels: set[str] = set()
        for name in names:
            base = base_name(name, documented)
            assert base is not None, f"panel {title!r}: {name} is not in docs/metrics.md"
            labels |= documented[base][1]
        for selector in re.findall(r"\bmemspace_[a-z0-9_]+\{([^}]*)\}", expr):
            for label in re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", selector):
                assert label in labels, f"panel {title!r}: no label {label!r} on {names}"
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            for label in (x.strip() for x in group.split(",")):
                assert label in labels, f"panel {title!r}: sum by {label!r}, not a label of {names}"
        checked += 1
    assert checked >= len(REQUIRED_PANELS)


def test_the_png_renderer_computes_every_dashboard_panel():
    spec = importlib.util.spec_from_file_location("render_dashboard", DOCS / "render_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    computed = set(module.panels(module.Scrapes()))
    assert computed == {p["title"] for p in dashboard()["panels"]}
    assert (DOCS / "dashboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_renderers_histogram_quantile_interpolates_like_prometheus():
    spec = importlib.util.spec_from_file_location("render_dashboard", DOCS / "render_dashboard.py")
    module = importlib.util.module_from_spec(spec)   # type: ignore[arg-type]
    spec.loader.exec_module(module)                  # type: ignore[union-attr]
    # 10 observations: 4 at or below 0.1, 8 at or below 0.5, all 10 below +Inf
    rates = {(("le", le), ("memory_space", "a")): np.array([c]) for le, c in
             (("0.1", 4.0), ("0.5", 8.0), ("+Inf", 10.0))}
    q50 = module.histogram_quantile(0.5, rates, "memory_space")["a"][0]
    assert q50 == pytest.approx(0.1 + 0.4 * (5 - 4) / (8 - 4))
    assert module.histogram_quantile(0.99, rates, "memory_space")["a"][0] == 0.5   # in +Inf: last bound


# -- a real scrape -----------------------------------------------------------------------------------

ENV = {"MEMSPACE_SPACES_DIMENSION": "16", "MEMSPACE_HEARTBEAT_S": "0.2", "MEMSPACE_HEARTBEAT_LIVENESS": "10",
       "MEMSPACE_RESTART_BACKOFF_INITIAL_S": "0.05"}


def scrape(server: ServerProcess) -> set[str]:
    text = httpx.get(server.endpoints["http"] + "/metrics", timeout=30).text
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_every_documented_metric_is_in_a_real_scrape(tmp_path):
    documented = documented_metrics()
    wanted = {name + ("_bucket" if kind == "histogram" else "") for name, (kind, _) in documented.items()}
    rng = np.random.default_rng(5)
    with ServerProcess(tmp_path / "data", http=True, env=ENV) as server:
        client = server.client()
        for name in ("docs-a", "docs-b"):
            client.create_space(name, dimension=16)
            space = client.space(name)
            for _ in range(5):
                space.remember(embedding=rng.standard_normal(16).astype(np.float32), content="x")
            space.recall(embedding=rng.standard_normal(16).astype(np.float32))
            with pytest.raises(MemoryNotFound):
                space.get("missing")
        client.default_space().count()                          # a default-space fallback
        with pytest.raises(SpaceNotFound):
            client.space("not-registered").count()              # rejected before any space
        client.hibernate("docs-b")                              # a checkpoint: checkpoint age
        pid = client.get_space("docs-a")["pid"]
        os.kill(pid, signal.SIGKILL)                            # a restart with a reason
        server.wait_status(client, "docs-a", lambda st: st["state"] == "READY" and st["restarts"] == 1,
                           "restart after SIGKILL")
        client.space("docs-a").count()
        # gauges fed by heartbeats need one after the restart: poll (bounded) until all are there
        deadline = time.monotonic() + 30.0
        seen = scrape(server)
        while not wanted <= seen and time.monotonic() < deadline:
            time.sleep(0.05)
            seen = scrape(server)
        client.close()
    assert wanted <= seen, f"documented but not exposed: {sorted(wanted - seen)}"
    undocumented = {n for n in seen if n.startswith("memspace_") and base_name(n, documented) is None}
    assert not undocumented, f"exposed but not in docs/metrics.md: {sorted(undocumented)}"


# -- operations.md and the service files ----------------------------------------------------------


def _table_keys(text: str, heading: str) -> list[tuple[str, str]]:
    """(key, default cell) of the table after ``heading`` in operations.md."""
    section = text.split(heading, 1)[1]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        m = re.match(r"\|\s*`([a-z_.]+)`\s*\|\s*([^|]*)\|", line)
        if m:
            rows.append((m.group(1), m.group(2).strip()))
    return rows


def test_operations_md_settings_exist_with_their_defaults():
    text = (DOCS / "operations.md").read_text()
    rows = _table_keys(text, "The settings that matter most in production:")
    assert len(rows) >= 15
    for key, default in rows:
        assert key in config_mod.BY_KEY, f"operations.md names an unknown setting {key}"
        expected = config_mod._toml_value(config_mod.BY_KEY[key].default).strip('"')
        assert default.strip("`") == expected, f"{key}: operations.md says {default}, the default is {expected}"
    limits = _table_keys(text, "## Limits")
    assert len(limits) >= 8
    for key, _ in limits:
        assert key in config_mod.BY_KEY, f"operations.md names an unknown setting {key}"


def test_environment_variables_in_docs_and_service_files_exist():
    settings_env = {s.env for s in config_mod.SETTINGS}
    for path in (DOCS / "operations.md", ROOT / "conf" / "supervisord.conf", ROOT / "conf" / "memspace.service"):
        for name in set(re.findall(r"\bMEMSPACE_[A-Z0-9_]+", path.read_text())):
            assert name in settings_env | OTHER_ENV, f"{path.name}: {name} is neither a setting nor known"


def test_commands_in_operations_md_exist():
    import typer.main

    from memspace.cli import app

    root = typer.main.get_command(app)
    commands = root.commands            # type: ignore[attr-defined]
    text = (DOCS / "operations.md").read_text()
    used = re.findall(r"(?:`|^)memspace ([a-z]+)(?: ([a-z]+))?", text, flags=re.MULTILINE)
    assert len(used) >= 10
    for cmd, sub in used:
        assert cmd in commands, f"operations.md uses `memspace {cmd}`"
        if cmd == "space":
            assert sub in commands["space"].commands, f"operations.md uses `memspace space {sub}`"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_verifies(tmp_path):
    exe = shutil.which("memspace") or "/bin/true"
    unit = tmp_path / "memspace.service"
    unit.write_text((ROOT / "conf" / "memspace.service").read_text().replace("/opt/memspace/bin/memspace", exe))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60,
                            check=False)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if str(unit) in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr
