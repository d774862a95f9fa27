"""PostgreSQL (psycopg 3): the store for more than one control-plane replica."""

from control_plane.store.postgres.backend import PostgresDatabase, open_postgres

__all__ = ["PostgresDatabase", "open_postgres"]
