"""The Neo4j circuit per graph client: after a Neo4j failure, writes journal only for a while."""

from __future__ import annotations

import time
import weakref

from api.core.resources import Resources
from graph.driver import GraphClient


class GraphHealth:
    """Whether this process should expect Neo4j to take a write right now.

    A write never waits on Neo4j for long (DESIGN.md §4: sync never waits for
    the projection): its in-request apply gives up after `OVERLAP_TIMEOUT`
    seconds, and after any such failure (unreachable, frozen, timed out) the
    writes of the next `COOLDOWN` seconds do not try at all. Their rows stay
    `pending` and the reconciler, which retries on its own timer, applies
    them once Neo4j answers; its first success closes the circuit again.
    """

    COOLDOWN = 5.0

    def __init__(self) -> None:
        self._until = 0.0

    def suspect(self) -> bool:
        return time.monotonic() < self._until

    def failed(self) -> None:
        self._until = time.monotonic() + self.COOLDOWN

    def ok(self) -> None:
        self._until = 0.0


_HEALTH: weakref.WeakKeyDictionary[GraphClient, GraphHealth] = weakref.WeakKeyDictionary()


def graph_health(resources: Resources) -> GraphHealth:
    """The circuit of this process's Neo4j client (one per app)."""
    health = _HEALTH.get(resources.graph)
    if health is None:
        health = _HEALTH[resources.graph] = GraphHealth()
    return health
