"""Shared pytest fixtures for the integration tests.

The tests connect to a running server through the standard libpq
environment variables (PGHOST, PGPORT, PGUSER, PGDATABASE), for example the
throwaway cluster started by test/lib/pg.sh's ivfpq_cluster_start.
"""
import psycopg
import pytest


@pytest.fixture
def conn():
    """An autocommit connection with the ivfpq extension created."""
    connection = psycopg.connect(autocommit=True)
    try:
        connection.execute("CREATE EXTENSION IF NOT EXISTS ivfpq")
        yield connection
    finally:
        connection.close()


def scratch_databases(conn, *names):
    """Create empty databases with these names (dropping old ones), yield
    the names, drop them afterwards: for a fixture's body."""
    for name in names:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    yield names
    for name in names:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
