"""Broker set-up: Redis in production, an in-process StubBroker in the embedded mode.

``setup_broker`` must run before the actor modules are imported (dramatiq binds an actor to
the global broker when it is declared); when actors already exist (tests build several
services in one process) they are moved onto the new broker.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

import dramatiq
import dramatiq.broker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from jobs.queues import ACTOR_MODULES, ALL_QUEUES
from jobs.settings import Settings


def setup_broker(settings: Settings) -> dramatiq.Broker:
    """Create the broker for ``settings``, make it the global one and declare every actor.

    Args:
        settings: ``broker_url`` selects RedisBroker; None selects StubBroker.

    Returns:
        The broker, already set with ``dramatiq.set_broker``.
    """
    from jobs.actors import ThreadRuntimeMiddleware

    broker: dramatiq.Broker = (
        RedisBroker(url=settings.broker_url)  # type: ignore[no-untyped-call]
        if settings.broker_url
        else StubBroker()
    )
    broker.add_middleware(ThreadRuntimeMiddleware())
    for queue in ALL_QUEUES:
        broker.declare_queue(queue)

    previous = dramatiq.broker.global_broker
    dramatiq.set_broker(broker)
    if previous is not None and previous is not broker:
        for name in previous.get_declared_actors():
            actor = previous.get_actor(name)
            actor.broker = broker
            broker.declare_actor(actor)
    load_actors()
    # Every worker (embedded threads or `velocity worker`) sweeps expired render leases.
    from jobs.renders.sweeper import install_sweeper

    install_sweeper(broker)
    return broker


def load_actors() -> None:
    """Import the actor modules so their actors are declared on the global broker."""
    for module in ACTOR_MODULES:
        importlib.import_module(module)


def start_embedded_worker(
    broker: dramatiq.Broker, threads: int, queues: Iterable[str] | None = None
) -> dramatiq.Worker:
    """Start dramatiq worker threads inside this process (embedded mode or tests).

    Args:
        broker: the broker returned by ``setup_broker``.
        threads: number of worker threads.
        queues: queue names to consume; default all.

    Returns:
        The started worker; call ``.stop()`` on shutdown.
    """
    worker = dramatiq.Worker(
        broker,
        queues=set(queues) if queues else set(ALL_QUEUES),
        worker_threads=threads,
        worker_timeout=100,
    )
    worker.start()
    return worker


def queue_depth(broker: dramatiq.Broker, queue: str) -> int | None:
    """Messages the broker holds for ``queue`` (queued, delayed, or taken and not yet
    acknowledged); None when the broker cannot tell.

    Raises:
        Whatever the broker's client raises when it is unreachable.
    """
    from dramatiq.common import dq_name

    client = getattr(broker, "client", None)
    if client is not None:  # RedisBroker
        namespace = getattr(broker, "namespace", "dramatiq")
        return sum(int(client.hlen(f"{namespace}:{q}.msgs")) for q in (queue, dq_name(queue)))
    queues = getattr(broker, "queues", None)
    if isinstance(queues, dict):  # StubBroker
        return sum(int(queues[q].qsize()) for q in (queue, dq_name(queue)) if q in queues)
    return None
