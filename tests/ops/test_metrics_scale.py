"""With 10,000 registered spaces a scrape stays bounded: max_metric_spaces labels plus __other__."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
from prometheus_client.parser import text_string_to_metric_families

from memspace.testing.server import ServerProcess

SPACES = 10_000


def test_scrape_is_bounded_with_ten_thousand_spaces(tmp_path):
    env = {"MEMSPACE_SPACES_DIMENSION": "8", "MEMSPACE_MAX_METRIC_SPACES": "100", "MEMSPACE_LIMITS_MAX_SPACES": "20000"}
    with ServerProcess(tmp_path / "data", http=True, env=env) as server:
        def create(chunk: range) -> None:
            with server.client() as c:
                for i in chunk:
                    c.create_space(f"tenant-{i:05d}", dimension=8)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(create, [range(i, min(i + 2500, SPACES)) for i in range(0, SPACES, 2500)]))
        client = server.client()
        for i in range(150):                      # traffic on 150 spaces: more than the limit
            client.space(f"tenant-{i:05d}").count()
        response = httpx.get(server.endpoints["http"] + "/metrics", timeout=60)
        assert response.status_code == 200
        labels = set()
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if "memory_space" in sample.labels:
                    labels.add(sample.labels["memory_space"])
        assert len(labels) == 101 and "__other__" in labels
        spaces = {f.name: f for f in text_string_to_metric_families(response.text)}["memspace_spaces"]
        assert sum(s.value for s in spaces.samples) == SPACES + 1        # + the default space
        assert len(response.content) < 2_000_000
