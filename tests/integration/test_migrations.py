import asyncpg
import pytest

from schemas.errors import SchemaOutOfDate
from services.runtime.db import migrate, migrations, require_current_schema

pytestmark = pytest.mark.integration


async def test_migrations_apply_once_and_services_accept_the_schema(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        assert await migrate(conn) == []  # the fixture already applied everything
    await require_current_schema(db)
    applied = await db.fetchval("SELECT max(version) FROM schema_migrations")
    assert applied == migrations()[-1].version


async def test_a_service_refuses_an_older_schema(db: asyncpg.Pool) -> None:
    await db.execute("DELETE FROM schema_migrations WHERE version = $1", migrations()[-1].version)
    with pytest.raises(SchemaOutOfDate, match="havip migrate"):
        await require_current_schema(db)
