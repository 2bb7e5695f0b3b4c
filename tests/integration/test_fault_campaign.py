"""The seeded fault campaign (tests/faults/campaign.py) in its short form, as part of the suite.

The long form is ``python tests/faults/campaign.py --rounds 500 --seed 1 [--actuator auto]``;
this runs a few rounds of the same campaign for each actuator on the fixtures' broker and
dbus-daemon, and fails with each violation and the line that replays its round.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List

import pytest

from tests.faults.campaign import FAULTS, OVERRIDE_FAULTS, Lab, Options, run_campaign
from tests.integration.conftest import Broker

if TYPE_CHECKING:  # imported by pytest_plugins below; importing it first would skip rewriting
    from tests.integration.dbus_fixtures import DbusDaemon

pytest_plugins = ["tests.integration.dbus_fixtures"]
pytestmark = pytest.mark.integration

SEED = 1
ROUNDS = 10  # per actuator
FAULTS_PER_ROUND = (2, 5)  # the long form draws 3 to 8


@pytest.mark.parametrize("actuator", ["setting", "auto"])
def test_fault_campaign_keeps_every_invariant(
    mosquitto: Broker, dbus_daemon_process: DbusDaemon, tmp_path: Path, actuator: str
) -> None:
    lines: List[str] = []
    options = Options(transport="auto", actuator=actuator, faults=FAULTS_PER_ROUND)
    lab = Lab(mosquitto, dbus_daemon_process, tmp_path)
    result = run_campaign(SEED, range(ROUNDS), options, lab, lines.append)
    print(result.summary())
    assert result.violations == 0, "\n".join(lines)
    # The campaign really broke things: most kinds of fault happened, and venus-prio wrote.
    possible = [k for k in FAULTS if actuator != "setting" or k not in OVERRIDE_FAULTS]
    kinds = {kind for r in result.rounds for kind, n in r.faults.items() if n}
    assert len(kinds) >= len(possible) - 2, kinds
    assert sum(r.writes for r in result.rounds) >= ROUNDS
