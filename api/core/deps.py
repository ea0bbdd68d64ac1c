"""Request dependencies: the process resources and a per-request unit of work.

Who owns the transaction: the request-scoped session below, and it commits
before the response is sent. Since FastAPI 0.118 a yield dependency's teardown
runs after the response by default, so a 201 could reach the client before its
commit (a fresh key refused on the next request, a revoked key still accepted).
`scope="function"` ends the dependency when the endpoint returns, before the
response starts: a 2xx means it happened.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from api.core.errors import postgres_unavailable
from api.core.resources import Resources
from relational.database import is_unreachable, unit_of_work


async def get_resources(request: Request) -> Resources:
    # `async def` although it never awaits: FastAPI runs a plain `def`
    # dependency in its threadpool, a thread hop on every request.
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_session(resources: ResourcesDep) -> AsyncIterator[AsyncSession]:
    """The request's transaction: committed on success, rolled back on error.

    A Postgres that cannot be reached becomes a 503 naming the dependency:
    nothing was recorded.
    """
    try:
        async with unit_of_work(resources.sessions) as session:
            yield session
    except Exception as exc:
        if is_unreachable(exc):
            raise postgres_unavailable() from exc
        raise


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
