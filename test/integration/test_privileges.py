"""Who may read an ivfpq index's statistics and verify it.

ivfpq_index_stats needs SELECT on the index's table or the privileges of
pg_stat_scan_tables (as pgstattuple); ivfpq_verify, which holds ShareLock on
the table, needs ownership of the index or pg_stat_scan_tables.  Everyone
else gets SQLSTATE 42501 and learns nothing of the index's contents.
"""
import psycopg
import pytest

ROLES = ("ivfpq_priv_owner", "ivfpq_priv_reader", "ivfpq_priv_nobody", "ivfpq_priv_monitor")


@pytest.fixture
def secured(conn):
    conn.execute("DROP TABLE IF EXISTS priv_items")
    for role in ROLES:
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role}")
    conn.execute("GRANT pg_stat_scan_tables TO ivfpq_priv_monitor")
    conn.execute("CREATE TABLE priv_items (id int, e vector(8))")
    conn.execute("ALTER TABLE priv_items OWNER TO ivfpq_priv_owner")
    conn.execute("INSERT INTO priv_items SELECT i, ARRAY(SELECT random() FROM generate_series(1, 8))::vector "
                 "FROM generate_series(1, 2000) i")
    conn.execute("CREATE INDEX priv_idx ON priv_items USING ivfpq (e) WITH (lists = 4, m = 4)")
    conn.execute("GRANT SELECT ON priv_items TO ivfpq_priv_reader")
    yield conn
    conn.execute("RESET ROLE")
    conn.execute("DROP TABLE IF EXISTS priv_items")
    for role in ROLES:
        conn.execute(f"DROP ROLE IF EXISTS {role}")


def call_as(conn, role, sql):
    """Run sql as role; return its rows, or the SQLSTATE of its error."""
    conn.execute(f"SET ROLE {role}")
    try:
        return conn.execute(sql).fetchall()
    except psycopg.Error as e:
        return e.sqlstate
    finally:
        conn.execute("RESET ROLE")


STATS = "SELECT rows FROM ivfpq_index_stats('priv_idx')"
VERIFY = "SELECT * FROM ivfpq_verify('priv_idx', true)"


def test_stats_need_select_or_pg_stat_scan_tables(secured):
    assert call_as(secured, "ivfpq_priv_nobody", STATS) == "42501"
    assert call_as(secured, "ivfpq_priv_reader", STATS) == [(2000,)]
    assert call_as(secured, "ivfpq_priv_monitor", STATS) == [(2000,)]
    assert call_as(secured, "ivfpq_priv_owner", STATS) == [(2000,)]


def test_verify_needs_ownership_or_pg_stat_scan_tables(secured):
    assert call_as(secured, "ivfpq_priv_nobody", VERIFY) == "42501"
    # SELECT alone does not let a role hold ShareLock on someone else's table.
    assert call_as(secured, "ivfpq_priv_reader", VERIFY) == "42501"
    assert call_as(secured, "ivfpq_priv_monitor", VERIFY) == []
    assert call_as(secured, "ivfpq_priv_owner", VERIFY) == []


def test_refusal_message_names_the_rule(secured):
    secured.execute("SET ROLE ivfpq_priv_nobody")
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
        secured.execute(STATS)
    secured.execute("RESET ROLE")
    assert "pg_stat_scan_tables" in e.value.diag.message_detail
