"""Spreading activation: the golden chain and each clause of the rule."""

from __future__ import annotations

import math

import pytest

from memspace.engine.spreading import spread

Graph = dict[str, list[tuple[str, float]]]


def over(graph: Graph):  # type: ignore[no-untyped-def]
    return lambda node: graph.get(node, [])


def rounded(result: dict, nodes: list[str]) -> list[float]:  # type: ignore[type-arg]
    return [round(result[n].activation, 3) if n in result else 0.0 for n in nodes]


def test_golden_chain() -> None:
    chain = {str(i): [(str(i + 1), 0.9)] for i in range(4)}
    result = spread([("0", 1.0)], over(chain))
    assert rounded(result, ["0", "1", "2", "3", "4"]) == [1.0, 0.447, 0.099, 0.0, 0.0]
    assert set(result) == {"0", "1", "2"}  # 3 would get 0.011 < 0.1 at depth 3; 4 is never reached
    assert result["2"].path == ("0", "1", "2") and result["2"].depth == 2
    assert result["1"].activation == pytest.approx(0.9 * math.exp(-0.7))


def test_seed_contribution_is_clamped_similarity_and_tiny_seeds_are_dropped() -> None:
    result = spread([("a", 1.7), ("b", 0.5), ("c", 0.009), ("d", -0.4)], over({}))
    assert {k: v.activation for k, v in result.items()} == {"a": 1.0, "b": 0.5}


def test_contributions_accumulate_and_cap_at_one() -> None:
    g: Graph = {"a": [("x", 1.0)], "b": [("x", 1.0)], "c": [("x", 1.0)]}
    r = spread([("a", 0.9), ("b", 0.8)], over(g))
    assert r["x"].activation == pytest.approx((0.9 + 0.8) * math.exp(-0.7))
    assert r["x"].path == ("a", "x")  # the strongest contribution came from a
    r = spread([("a", 1.0), ("b", 1.0), ("c", 1.0), ("x", 0.5)], over(g))
    assert r["x"].activation == 1.0
    assert r["x"].path == ("x",)  # its own seed contribution (0.5) beats 0.497 from a link


def test_depth_thresholds() -> None:
    # depth 1 needs >= 0.05: 0.1 * 1.0 * e^-0.7 = 0.0497 is dropped, 0.11 * e^-0.7 = 0.0546 kept
    assert "x" not in spread([("a", 0.1)], over({"a": [("x", 1.0)]}))
    assert "x" in spread([("a", 0.11)], over({"a": [("x", 1.0)]}))
    # a dropped node does not spread further
    g: Graph = {"a": [("x", 0.1)], "x": [("y", 1.0)]}
    assert set(spread([("a", 1.0)], over(g))) == {"a"}


def test_max_depth_limits_the_walk() -> None:
    chain = {str(i): [(str(i + 1), 1.0)] for i in range(4)}
    assert set(spread([("0", 1.0)], over(chain), max_depth=0)) == {"0"}
    assert set(spread([("0", 1.0)], over(chain), max_depth=1)) == {"0", "1"}
    with pytest.raises(ValueError):
        spread([("0", 1.0)], over(chain), max_depth=5)


def test_no_re_expansion_along_the_current_path() -> None:
    # a <-> b cycle: b gets a's contribution; a is not re-entered from b (it is on the path)
    g: Graph = {"a": [("b", 1.0)], "b": [("a", 1.0), ("c", 1.0)]}
    r = spread([("a", 1.0)], over(g))
    assert r["a"].activation == 1.0 and r["a"].path == ("a",)
    assert r["b"].activation == pytest.approx(math.exp(-0.7))
    assert r["c"].activation == pytest.approx(math.exp(-0.7) * math.exp(-1.4))


def test_diamond_accumulates_both_paths() -> None:
    g: Graph = {"s": [("l", 1.0), ("r", 0.5)], "l": [("t", 1.0)], "r": [("t", 1.0)]}
    r = spread([("s", 1.0)], over(g))
    e1, e2 = math.exp(-0.7), math.exp(-1.4)
    assert r["t"].activation == pytest.approx(e1 * e2 + 0.5 * e1 * e2)
    assert r["t"].path == ("s", "l", "t")


def test_seed_order_does_not_change_activations() -> None:
    g: Graph = {"a": [("x", 0.8), ("y", 0.9)], "b": [("x", 0.7)], "x": [("z", 1.0)]}
    one = spread([("a", 0.9), ("b", 0.7)], over(g))
    two = spread([("b", 0.7), ("a", 0.9)], over(g))
    assert {k: pytest.approx(v.activation) for k, v in one.items()} == {k: v.activation for k, v in two.items()}
