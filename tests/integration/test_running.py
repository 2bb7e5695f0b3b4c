"""The ``running`` helper stops a task that survives its first cancel.

Every fake GX, source and listener of the integration tests runs under ``running``. Before
Python 3.12, ``asyncio.wait_for`` returns the result instead of raising when a cancel arrives
in the loop turn that completes what it awaits (bpo-42130); aiomqtt awaits every publish that
way. A fake GX cancelled in the middle of a full publish then kept serving, and a helper that
cancelled once waited for it until ``run_async`` gave up after 60 s.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Optional

from tests.integration.conftest import run_async, running

# Python 3.12 rewrote asyncio.wait_for on asyncio.timeout: a cancel is no longer lost.
WAIT_FOR_LOSES_A_CANCEL = sys.version_info < (3, 12)


class Replies:
    """Awaits one reply after another with ``asyncio.wait_for``, as aiomqtt awaits a publish."""

    def __init__(self) -> None:
        self.pending: Optional[asyncio.Future[None]] = None
        self.received = 0

    async def run(self) -> None:
        while True:
            self.pending = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(self.pending, 10.0)
            self.received += 1

    def reply(self) -> None:
        assert self.pending is not None
        self.pending.set_result(None)


def test_a_task_that_survives_a_cancel_is_still_stopped() -> None:
    async def scenario() -> None:
        replies = Replies()
        async with running(replies.run()) as task:
            await asyncio.sleep(0)  # the task now waits for its first reply
            replies.reply()  # arrives in the loop turn in which ``running`` cancels the task
        assert task.cancelled()
        # Before 3.12 the task took the reply instead of the cancel and went on waiting.
        assert replies.received == (1 if WAIT_FOR_LOSES_A_CANCEL else 0)

    run_async(scenario(), timeout=5.0)
