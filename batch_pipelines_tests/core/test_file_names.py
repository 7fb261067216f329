"""Names from outside become one safe path component each, and can be read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch_pipelines.core.errors import InvalidInputError
from batch_pipelines.core.file_names import MAX_FILE_NAME, name_from_file_name, safe_file_name

HOSTILE = ["../escape", "/absolute/key", "..", ".", "a/../../b", "C:\\windows", "nul\x00byte", "~root", "é/ü", "%2E%2E"]


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_name_is_one_component_inside_its_folder_and_reversible(name, tmp_path):
    """No separator, no dot-only name, no absolute path: it stays inside its folder, and unquoting gives it back."""
    escaped = safe_file_name(name)
    assert "/" not in escaped and "\\" not in escaped and "\x00" not in escaped and escaped.strip(".")
    joined = (tmp_path / escaped).resolve()
    assert joined.parent == tmp_path.resolve()
    assert name_from_file_name(escaped) == name


@pytest.mark.parametrize("name", ["2026-11-26", "shard-000", "batch_abc123", "msgbatch_01XyZ"])
def test_ordinary_names_read_unchanged_on_disk(name):
    """Dates, shard names and vendor ids keep their names, so existing folders stay where they were."""
    assert safe_file_name(name) == name


def test_a_very_long_name_is_shortened_with_a_digest_of_the_whole():
    """A 5,000-character key fits a file name, and two long keys differing at the end stay distinct."""
    a, b = "k" * 5000 + "a", "k" * 5000 + "b"
    assert len(safe_file_name(a)) <= MAX_FILE_NAME and safe_file_name(a) != safe_file_name(b)
    assert len(safe_file_name("/" * 500)) <= MAX_FILE_NAME and "/" not in safe_file_name("/" * 500)


def test_an_empty_name_is_refused():
    """An empty key has no file name: refused with InvalidInputError before anything is written."""
    with pytest.raises(InvalidInputError):
        safe_file_name("")


def test_distinct_names_never_share_a_file_name():
    """The escape is injective: '%2F' spelled out and '/' escaped do not collide."""
    names = ["a/b", "a%2Fb", "a_b", "a-b", "a.b", "a%2Eb"]
    assert len({safe_file_name(n) for n in names}) == len(names)
    assert Path(safe_file_name("a/b")).name == "a%2Fb"
