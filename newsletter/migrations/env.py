"""Alembic environment: runs on the engine ``newsletter.db.core`` hands in."""

from __future__ import annotations

from alembic import context

from newsletter.models import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # the alembic CLI, for developers writing a migration
    from sqlalchemy import create_engine

    engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///newsletter.db")

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
