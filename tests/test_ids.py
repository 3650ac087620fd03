from __future__ import annotations

import pytest

from memspace.errors import InvalidArgument, InvalidSpaceId
from memspace.ids import is_valid_space_id, validate_memory_id, validate_space_id


@pytest.mark.parametrize("good", ["abc", "default", "a-b_c", "0tenant", "x" * 64, "t-1"])
def test_valid_space_ids(good):
    assert validate_space_id(good, "path") == good and is_valid_space_id(good)


@pytest.mark.parametrize(
    "bad, why",
    [
        ("", "empty"),
        ("ab", "shorter than 3"),
        ("x" * 65, "65 characters"),
        ("Alpha", "start with a lower-case letter"),
        ("alPha", r"'P'"),
        ("a/b/c", r"'/'"),
        ("..x", "start with"),
        ("a.b", r"'\.'"),
        ("has space", r"' '"),
        ("émile", "start with"),
        ("-abc", "start with"),
        ("abc\n", r"'\\n'"),
    ],
)
def test_invalid_space_ids_say_why_and_where(bad, why):
    with pytest.raises(InvalidSpaceId, match=why) as e:
        validate_space_id(bad, "header")
    assert "from header" in e.value.message
    assert e.value.code == "INVALID_SPACE_ID" and e.value.details["source"] == "header"
    assert not is_valid_space_id(bad)


def test_non_string_space_id():
    with pytest.raises(InvalidSpaceId, match="must be a string"):
        validate_space_id(42, "body")


def test_memory_ids():
    assert validate_memory_id("m-1") == "m-1"
    for bad in ("", "a b", "-x", "x" * 129, "a/b", None):
        with pytest.raises(InvalidArgument, match="invalid memory id"):
            validate_memory_id(bad)
