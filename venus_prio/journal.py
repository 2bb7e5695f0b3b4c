"""The baseline journal (control.md section 6): the user's own MaxDischargePower, kept on disk.

After a crash the value on the GX may be venus-prio's own, so the user's value must survive the
process: it lives in ``journal.json`` in the state directory together with whether the setting was
handed back cleanly, whether venus-prio may hold the hub4 override (control.md section 8: a restart
after a crash releases or takes over the right actuator), and the mode chosen in Home Assistant.

It is saved only when what a restart needs changes (the baseline, clean/dirty, the override held
or not, the mode), never on a mere steering write: on a GX it sits on the same flash as
settings.xml, and the override may change every few seconds. The file is replaced
atomically (temp file in the same directory, fsync, ``os.replace``): a crash mid-write leaves the
old journal, never half a new one. A journal that cannot be read or parsed is logged once and
treated as absent; it never stops the service.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Set, Tuple

log = logging.getLogger(__name__)

JOURNAL_FILE = "journal.json"
MODES: Tuple[str, ...] = ("auto", "dry-run", "off")

# Paths already reported as unreadable: a corrupt journal is logged once, not on every load.
_reported: Set[str] = set()


@dataclass(frozen=True)
class Journal:
    """What the journal file holds."""

    portal_id: Optional[str]
    baseline_w: Optional[float]  # the user's own value; None = not known yet
    # The last setting value venus-prio had sent when the journal was saved (not updated on each
    # steering write); None = never wrote.
    last_written_w: Optional[float]
    # True when the setting holds the user's value (handed back and confirmed); False: it may
    # hold one of venus-prio's, so after a crash the value on the GX is not the user's.
    clean: bool
    mode: str = "auto"  # "auto" | "dry-run" | "off" (a Home Assistant control)
    updated: float = 0.0  # unix time of the last save
    # True while venus-prio may hold the hub4 override (from before its first override write
    # until a release was confirmed, or until the GX showed it no longer holds venus-prio's).
    override_held: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")


def journal_path(state_dir: Path) -> Path:
    """Return where the journal lives in ``state_dir``."""
    return state_dir / JOURNAL_FILE


def _number(raw: Dict[str, Any], key: str) -> Optional[float]:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key}: not a finite number: {value!r}")
    return float(value)


def _parse(raw: Any) -> Journal:
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    portal_id = raw.get("portal_id")
    if portal_id is not None and not isinstance(portal_id, str):
        raise ValueError(f"portal_id: not a string: {portal_id!r}")
    clean = raw.get("clean")
    if not isinstance(clean, bool):
        raise ValueError(f"clean: not true or false: {clean!r}")
    override_held = raw.get("override_held", False)  # absent in journals of older versions
    if not isinstance(override_held, bool):
        raise ValueError(f"override_held: not true or false: {override_held!r}")
    mode = raw.get("mode", "auto")
    if mode not in MODES:
        raise ValueError(f"mode: not one of {', '.join(MODES)}: {mode!r}")
    return Journal(
        portal_id=portal_id,
        baseline_w=_number(raw, "baseline_w"),
        last_written_w=_number(raw, "last_written_w"),
        clean=clean,
        mode=mode,
        updated=_number(raw, "updated") or 0.0,
        override_held=override_held,
    )


def load_journal(path: Path) -> Optional[Journal]:
    """Return the journal at ``path``; None when there is none or it is unreadable (logged once)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        _report_once(path, f"cannot read it: {exc}")
        return None
    try:
        journal = _parse(json.loads(text))
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        _report_once(path, f"not a valid journal: {exc}")
        return None
    _reported.discard(str(path))
    return journal


def _report_once(path: Path, problem: str) -> None:
    if str(path) not in _reported:
        _reported.add(str(path))
        log.warning("Ignoring the baseline journal %s: %s", path, problem)


def save_journal(path: Path, journal: Journal) -> None:
    """Write the journal atomically; create its directory (mode 0700) when missing."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = json.dumps(asdict(journal), indent=2, sort_keys=True) + "\n"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, str(path))
    except BaseException:
        # Leave the previous journal untouched and no stray temp file behind.
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (a power cut right after must not bring the old file back)."""
    try:
        fd = os.open(str(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename is still atomic
    finally:
        os.close(fd)
