"""Request dependencies: the process resources and a per-request unit of work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import DependencyUnavailable
from api.resources import Resources
from graph.driver import GraphClient


def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_session(resources: ResourcesDep) -> AsyncIterator[AsyncSession]:
    """The request's transaction: committed on success, rolled back on error.

    A Postgres that cannot be reached becomes a 503 naming the dependency:
    nothing was recorded.
    """
    try:
        async with resources.sessions() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise
    except (OperationalError, InterfaceError, OSError) as exc:
        raise DependencyUnavailable(
            "postgres is unavailable; nothing was recorded", details={"dependency": "postgres"}
        ) from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise DependencyUnavailable(
                "postgres is unavailable; nothing was recorded", details={"dependency": "postgres"}
            ) from exc
        raise


def get_graph(resources: ResourcesDep) -> GraphClient:
    return resources.graph


SessionDep = Annotated[AsyncSession, Depends(get_session)]
GraphDep = Annotated[GraphClient, Depends(get_graph)]
