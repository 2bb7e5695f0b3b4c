"""Concurrency helpers of the shell: one small supervisor, cancellation that sticks.

Python 3.8 has no TaskGroup: ``supervise`` waits with ``FIRST_EXCEPTION`` and then cancels and
awaits the rest, so no task is ever left behind (style.md rule 7).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Sequence, TypeVar

from venus_prio.errors import SourceUnavailable
from venus_prio.venus.source import Source

log = logging.getLogger(__name__)

T = TypeVar("T")

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


async def with_source(source: Source, main: Awaitable[T]) -> T:
    """Run ``main`` while the source keeps itself connected; a failing source fails ``main``."""
    source_task: asyncio.Future[None] = asyncio.ensure_future(source.run())

    async def main_then_stop() -> T:
        try:
            return await main
        finally:
            await cancel_and_wait([source_task])

    main_task: asyncio.Future[T] = asyncio.ensure_future(main_then_stop())
    await supervise([source_task, main_task])
    if main_task.cancelled():
        exc = None if source_task.cancelled() else source_task.exception()
        if exc is not None:
            raise exc
        raise SourceUnavailable("the source stopped")
    return main_task.result()
