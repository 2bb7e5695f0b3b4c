"""DispatchQueue: aiomqtt's incoming queue that hands messages straight to the handler."""

from __future__ import annotations

import asyncio
from typing import List

import aiomqtt

from venus_prio.config import VenusConfig
from venus_prio.venus.mqtt import DispatchQueue, make_client, resolve_endpoint


def _message(n: int) -> aiomqtt.Message:
    return aiomqtt.Message(f"N/x/{n}", b"{}", qos=0, retain=False, mid=n, properties=None)


def test_queued_messages_go_first_then_each_at_once_until_stopped() -> None:
    async def scenario() -> None:
        queue = DispatchQueue()
        handled: List[str] = []
        queue.put_nowait(_message(1))  # before dispatch: queued, as aiomqtt's own queue
        queue.put_nowait(_message(2))
        assert handled == [] and queue.qsize() == 2
        queue.start_dispatch(lambda m: handled.append(m.topic.value))
        assert handled == ["N/x/1", "N/x/2"] and queue.empty()
        queue.put_nowait(_message(3))
        assert handled == ["N/x/1", "N/x/2", "N/x/3"] and queue.empty()
        queue.stop_dispatch()
        queue.put_nowait(_message(4))
        assert len(handled) == 3 and queue.get_nowait().topic.value == "N/x/4"

    asyncio.run(scenario())


def test_the_client_receives_into_the_queue_it_was_given() -> None:
    async def scenario() -> None:
        queue = DispatchQueue()
        endpoint = resolve_endpoint(VenusConfig())
        client = make_client(endpoint, name="t", queue=queue)
        queue.put_nowait(_message(1))
        assert len(client.messages) == 1  # aiomqtt's view of its queue: this one
        assert (await client.messages.__anext__()).topic.value == "N/x/1"

    asyncio.run(scenario())
