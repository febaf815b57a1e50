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
