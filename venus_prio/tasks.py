"""Concurrency helpers of the shell: one small supervisor, cancellation that sticks.

Python 3.8 has no TaskGroup: ``supervise`` waits with ``FIRST_EXCEPTION`` and then cancels and
awaits the rest, so no task is ever left behind (style.md rule 7).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Sequence

log = logging.getLogger(__name__)

# Cancelling a task again when it survived a cancellation (see cancel_and_wait).
CANCEL_RETRY_S = 0.5


async def supervise(tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Wait until every task ended or one failed; then cancel and await the rest.

    Python 3.8 has no TaskGroup. Background tasks run until cancelled, so the main task cancels
    them when it ends (``Service._steer_then_stop``) and FIRST_EXCEPTION returns on a failure
    or the end.
    """
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        await cancel_and_wait(tasks)


async def cancel_and_wait(tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Cancel the tasks and wait until every one has ended.

    Python 3.8's ``asyncio.wait_for`` can swallow a cancellation that races with its result
    (bpo-42130): a task may survive one ``cancel()``, so the cancellation is repeated.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_RETRY_S)
        if pending:
            log.debug("%d task(s) survived a cancellation; cancelling again", len(pending))
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved here; the caller looks at the result it needs
