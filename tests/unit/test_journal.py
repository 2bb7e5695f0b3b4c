"""The baseline journal: round trip, atomic replacement, corrupt files."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any, List

import pytest

from venus_prio.journal import Journal, journal_path, load_journal, save_journal

JOURNAL = Journal(
    portal_id="c0619ab00001",
    baseline_w=2500.0,
    last_written_w=450.0,
    clean=False,
    mode="dry-run",
    updated=1_790_000_000.5,
    override_held=True,
)


def _leftovers(directory: Path) -> List[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != "journal.json")


def test_round_trip_creates_a_private_directory(tmp_path: Path) -> None:
    path = journal_path(tmp_path / "state" / "venus-prio")
    save_journal(path, JOURNAL)
    assert load_journal(path) == JOURNAL
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text(encoding="utf-8"))["baseline_w"] == 2500.0
    assert _leftovers(path.parent) == []


def test_round_trip_of_unknown_values(tmp_path: Path) -> None:
    journal = Journal(portal_id=None, baseline_w=None, last_written_w=None, clean=True)
    path = journal_path(tmp_path)
    save_journal(path, journal)
    loaded = load_journal(path)
    assert loaded == journal
    assert loaded is not None and loaded.mode == "auto"


def test_save_replaces_the_previous_journal(tmp_path: Path) -> None:
    path = journal_path(tmp_path)
    save_journal(path, JOURNAL)
    cleaned = Journal(
        portal_id="c0619ab00001", baseline_w=2500.0, last_written_w=2500.0, clean=True
    )
    save_journal(path, cleaned)
    assert load_journal(path) == cleaned
    assert _leftovers(tmp_path) == []


def test_missing_journal_is_absent(tmp_path: Path) -> None:
    assert load_journal(journal_path(tmp_path)) is None


def test_failed_save_keeps_the_old_journal_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = journal_path(tmp_path)
    save_journal(path, JOURNAL)

    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        save_journal(path, Journal(portal_id="x", baseline_w=1.0, last_written_w=1.0, clean=True))
    monkeypatch.undo()
    assert load_journal(path) == JOURNAL
    assert _leftovers(tmp_path) == []


def test_save_onto_a_directory_fails_without_leaving_a_temp_file(tmp_path: Path) -> None:
    path = journal_path(tmp_path)
    path.mkdir()
    with pytest.raises(OSError):
        save_journal(path, JOURNAL)
    assert _leftovers(tmp_path) == []
    assert path.is_dir()


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        '{"portal_id": "x", "baseline_w": 2500}',  # no clean flag
        '{"portal_id": "x", "baseline_w": "2500", "clean": true}',
        '{"portal_id": "x", "baseline_w": 2500, "clean": true, "mode": "turbo"}',
        '{"portal_id": 7, "baseline_w": 2500, "clean": true}',
        '{"portal_id": "x", "baseline_w": NaN, "clean": true}',
        '{"portal_id": "x", "baseline_w": 2500, "clean": true, "override_held": "yes"}',
        "",
    ],
)
def test_corrupt_journal_is_absent_and_logged_once(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = journal_path(tmp_path)
    path.write_text(content, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="venus_prio.journal"):
        assert load_journal(path) is None
        assert load_journal(path) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0].getMessage()


def test_binary_garbage_is_absent(tmp_path: Path) -> None:
    path = journal_path(tmp_path)
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert load_journal(path) is None


def test_a_repaired_journal_is_read_again(tmp_path: Path) -> None:
    path = journal_path(tmp_path)
    path.write_text("{broken", encoding="utf-8")
    assert load_journal(path) is None
    save_journal(path, JOURNAL)
    assert load_journal(path) == JOURNAL


def test_journal_rejects_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="mode"):
        Journal(portal_id=None, baseline_w=None, last_written_w=None, clean=True, mode="turbo")


def test_the_exact_format_on_disk(tmp_path: Path) -> None:
    path = journal_path(tmp_path)
    save_journal(path, JOURNAL)
    assert json.loads(path.read_text(encoding="utf-8")) == {
        "baseline_w": 2500.0,
        "clean": False,
        "last_written_w": 450.0,
        "mode": "dry-run",
        "override_held": True,
        "portal_id": "c0619ab00001",
        "updated": 1_790_000_000.5,
    }


def test_a_journal_of_an_older_version_holds_no_override(tmp_path: Path) -> None:
    path = journal_path(tmp_path)
    path.write_text('{"portal_id": "x", "baseline_w": 2500, "clean": false}', encoding="utf-8")
    journal = load_journal(path)
    assert journal is not None and not journal.override_held and not journal.clean
