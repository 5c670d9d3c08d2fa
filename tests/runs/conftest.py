from collections.abc import AsyncIterator

import pytest_asyncio
from asgiref.sync import sync_to_async
from django.db import connections


@pytest_asyncio.fixture(autouse=True)
async def close_store_connections() -> AsyncIterator[None]:
    """Close the connection the store's `sync_to_async` thread opened, so the test database can be dropped."""
    yield
    await sync_to_async(connections.close_all)()
