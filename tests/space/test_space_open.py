"""Opening, locking and closing a space: dimension and settings fixed at creation, one process
at a time, closed spaces refuse work, context manager, group commit."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

import memspace
from memspace.errors import InvalidArgument, SpaceUnavailable, StorageError
from memspace.storage.space import Space, open_space

from .conftest import DIM, Opener, basis


def test_space_json_keeps_dimension_and_settings(opener: Opener) -> None:
    opener.settings = {"decay": "none", "dedup_threshold": 0.9, "max_auto_links": 2}
    with opener(space_id="alpha") as s:
        s.remember(embedding=basis(0))
    meta = orjson.loads((opener.path / "space.json").read_bytes())
    assert (meta["format"], meta["id"], meta["dimension"]) == (1, "alpha", DIM)
    assert meta["created_at"] == opener.clock.time()
    assert meta["settings"]["dimension"] == DIM
    assert (meta["settings"]["dedup_threshold"], meta["settings"]["max_auto_links"],
            meta["settings"]["decay"]) == (0.9, 2, "none")
    for sub in ("wal", "snapshots", "warm", "cold"):
        assert (opener.path / sub).is_dir()
    # reopened without dimension or settings: the stored ones apply
    with open_space(opener.path, config=opener.config) as s:
        assert s.settings.dimension == DIM and s.settings.dedup_threshold == 0.9
        assert s.settings.max_auto_links == 2 and s.count() == 1


def test_new_space_takes_the_config_defaults(tmp_path: Path, opener: Opener) -> None:
    cfg = opener.config.replace({"spaces.dimension": 12, "spaces.link_threshold": 0.8})
    with open_space(tmp_path / "d", config=cfg) as s:
        assert (s.settings.dimension, s.settings.link_threshold) == (12, 0.8)


def test_dimension_is_fixed_per_space(opener: Opener) -> None:
    opener().close()
    with pytest.raises(InvalidArgument) as info:
        opener(dimension=DIM + 1)
    err = info.value
    assert err.code == "INVALID_ARGUMENT" and err.details["field"] == "dimension"
    assert f"dimension {DIM}" in err.message and str(DIM + 1) in err.message
    with opener() as s:     # the failed open released the lock
        assert s.settings.dimension == DIM


def test_other_settings_on_reopen_are_refused(opener: Opener) -> None:
    opener().close()
    with pytest.raises(InvalidArgument) as info:
        opener(settings={"decay": "none", "dedup_threshold": 0.5})
    assert info.value.code == "INVALID_ARGUMENT"
    assert info.value.details["existing"]["dedup_threshold"] == 0.95
    assert info.value.details["asked"]["dedup_threshold"] == 0.5
    with opener(settings={"decay": "none"}) as s:          # the same settings are fine
        assert s.settings.decay == "none"


@pytest.mark.parametrize("settings, field", [({"decay": "sometimes"}, "decay"),
                                             ({"dedup_threshold": 1.5}, "dedup_threshold"),
                                             ({"colour": "red"}, None)])
def test_invalid_settings_create_nothing(tmp_path: Path, settings: dict[str, object], field: str | None) -> None:
    with pytest.raises(InvalidArgument) as info:
        open_space(tmp_path / "d", dimension=DIM, settings=settings)
    if field is not None:
        assert info.value.details["field"] == field and field in info.value.message
    else:
        assert "colour" in info.value.message
    assert not (tmp_path / "d" / "space.json").exists()


def test_create_false_refuses_a_missing_space(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as info:
        open_space(tmp_path / "nothing", dimension=DIM, create=False)
    assert "space.json" in info.value.message
    assert not (tmp_path / "nothing").exists()


def test_second_open_in_this_process_names_the_pid(opener: Opener) -> None:
    with opener() as s:
        s.remember(embedding=basis(0), id="a")
        with pytest.raises(SpaceUnavailable) as info:
            opener()
        err = info.value
        assert err.code == "SPACE_UNAVAILABLE"
        assert err.details["pid"] == str(os.getpid()) and f"pid {os.getpid()}" in err.message
        assert s.get("a").id == "a"                 # the holder is unaffected
    with opener() as s:                             # released by close
        assert s.count() == 1


def test_second_open_from_another_process_names_the_holder(opener: Opener) -> None:
    code = ("import sys\nfrom memspace.storage.space import open_space\n"
            "from memspace.errors import SpaceUnavailable\n"
            "try:\n    open_space(sys.argv[1])\nexcept SpaceUnavailable as e:\n"
            "    print(e.code, e.details['pid'])\nelse:\n    print('opened')\n")
    with opener():
        out = subprocess.run([sys.executable, "-c", code, str(opener.path)], check=False, capture_output=True,
                             text=True, timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.split() == ["SPACE_UNAVAILABLE", str(os.getpid())], out.stderr


def test_closed_space_refuses_every_operation(opener: Opener) -> None:
    s = opener()
    s.remember(embedding=basis(0), id="a")
    s.close()
    s.close()                                        # idempotent
    assert s.closed and "closed" in repr(s)
    calls: list[Callable[[], object]] = [lambda: s.remember(embedding=basis(1)), lambda: s.remember_batch([{"embedding": basis(1)}]),
             lambda: s.get("a"), lambda: s.forget("a"), lambda: s.link("a", "a"),
             lambda: s.recall(embedding=basis(0)), lambda: s.count(), lambda: s.list(), lambda: s.stats(),
             lambda: s.sync(), lambda: s.checkpoint()]
    for call in calls:
        with pytest.raises(SpaceUnavailable) as info:
            call()
        assert info.value.code == "SPACE_UNAVAILABLE" and "closed" in info.value.message
    with pytest.raises(SpaceUnavailable), s.group_commit():
        pass


def test_context_manager_closes_even_on_error(opener: Opener) -> None:
    with pytest.raises(RuntimeError), opener() as s:
        s.remember(embedding=basis(0), id="a")
        raise RuntimeError("boom")
    assert s.closed
    with memspace.open_space(opener.path, config=opener.config) as again:
        assert isinstance(again, Space) and again.get("a").id == "a"
    assert again.closed


def test_group_commit_applies_now_and_syncs_once_at_the_end(opener: Opener) -> None:
    with opener() as s:
        with s.group_commit():
            a = s.remember(embedding=basis(0), id="a")
            s.remember(embedding=basis(1), id="b")
            s.link("a", "b", 0.5)
            assert s.get("a").links[0].target == "b"        # visible inside the block
            st = s.stats()
            assert st.wal_last_seq == 3 and st.wal_durable_seq == 0
        st = s.stats()
        assert (st.wal_last_seq, st.wal_durable_seq) == (3, 3)
        assert a.outcome == "stored"
    with opener() as s:
        assert s.count() == 2 and s.get("a").links[0].target == "b"


def test_a_failed_write_inside_group_commit_keeps_the_others(opener: Opener) -> None:
    with opener() as s:
        with s.group_commit():
            s.remember(embedding=basis(0), id="a")
            with pytest.raises(InvalidArgument):
                s.remember(embedding=[1.0])
            s.remember(embedding=basis(1), id="b")
        assert s.stats().wal_durable_seq == 2
    with opener() as s:
        assert [m.id for m in s.list().items] == ["a", "b"]
