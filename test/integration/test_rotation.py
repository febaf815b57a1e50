"""Managed partitions against a real cluster: concurrent ivfpq_rotate calls,
pg_dump + restore of a managed table, and ivfpq_rotate() run by pg_cron.

The pg_cron test needs the cluster started by test/run.sh, which preloads
pg_cron with cron.database_name = 'postgres'.
"""
import os
import subprocess
import threading
import time

import psycopg

from conftest import scratch_databases
import pytest

PGBIN = "/usr/lib/postgresql/15/bin"


def connect(dbname=None, **kwargs):
    return psycopg.connect(dbname=dbname or os.environ.get("PGDATABASE", "postgres"), autocommit=True, **kwargs)


def partitions(conn, table):
    """Names of a table's partitions, oldest range first."""
    return [r[0] for r in conn.execute(
        "SELECT partition::text FROM ivfpq_partition_bounds(%s) ORDER BY range_from", (table,)).fetchall()]


def make_managed(conn, table, now, premake=1):
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(f"CREATE TABLE {table} (at timestamptz NOT NULL, e vector(4)) PARTITION BY RANGE (at)")
    return conn.execute(
        "SELECT action, partition FROM ivfpq_manage(%s, 'at', premake => %s, index_options => 'lists = 2, m = 2', "
        "now => %s)", (table, premake, now)).fetchall()


def drop_managed(conn, table):
    conn.execute("SELECT ivfpq_unmanage(%s)", (table,))
    conn.execute(f"DROP TABLE {table}")


def wait_until_blocked(conn, pid, seconds=10):
    """Wait until backend pid waits for an advisory lock."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        row = conn.execute("SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE pid = %s",
                           (pid,)).fetchone()
        if row == ("Lock", "advisory"):
            return
        time.sleep(0.02)
    pytest.fail(f"backend {pid} never waited for the rotation lock")


@pytest.mark.parametrize("isolation", ["READ COMMITTED", "REPEATABLE READ"])
def test_concurrent_rotations(conn, isolation):
    """A second rotation waits for the first; after it commits, the second
    finds nothing left to do, does not fail, and the partitions are right."""
    table = "rot_concurrent"
    make_managed(conn, table, "2026-11-20 10:00+00")
    assert partitions(conn, table) == [f"{table}_p20261120", f"{table}_p20261121"]

    first = connect()
    second = connect()
    outcome = {}
    try:
        first.execute("BEGIN")
        done_first = first.execute(
            "SELECT action, partition FROM ivfpq_rotate(%s, '2026-11-23 10:00+00')", (table,)).fetchall()
        assert [a for a, _ in done_first] == ["created", "created"]

        second.execute(f"BEGIN ISOLATION LEVEL {isolation}")
        second.execute("SELECT count(*) FROM pg_class")  # take the snapshot before the first commits

        def rotate():
            try:
                outcome["rows"] = second.execute(
                    "SELECT action, partition FROM ivfpq_rotate(%s, '2026-11-23 10:00+00')", (table,)).fetchall()
                second.execute("COMMIT")
            except psycopg.Error as error:
                outcome["error"] = error

        thread = threading.Thread(target=rotate)
        thread.start()
        wait_until_blocked(conn, second.info.backend_pid)
        assert thread.is_alive()
        first.execute("COMMIT")
        thread.join(30)
        assert not thread.is_alive(), "the second rotation did not finish"
        assert "error" not in outcome, outcome.get("error")
        assert outcome["rows"] == []
    finally:
        first.close()
        second.close()

    assert partitions(conn, table) == [f"{table}_p20261120", f"{table}_p20261121",
                                       f"{table}_p20261123", f"{table}_p20261124"]
    # every partition has its ivfpq index, exactly one
    assert conn.execute(
        "SELECT count(*) FROM ivfpq_partitions(%s) WHERE index IS NOT NULL", (table,)).fetchone()[0] == 4
    # and a third rotation finds nothing to do
    assert conn.execute("SELECT count(*) FROM ivfpq_rotate(%s, '2026-11-23 10:00+00')",
                        (table,)).fetchone()[0] == 0
    drop_managed(conn, table)


def test_concurrent_rotations_threads(conn):
    """Eight sessions rotate the same table at the same moment: no errors,
    each partition created once."""
    table = "rot_stampede"
    make_managed(conn, table, "2026-11-20 10:00+00", premake=0)
    errors = []
    created = []
    barrier = threading.Barrier(8)

    def rotate():
        with connect() as session:
            barrier.wait()
            try:
                created.extend(r[0] for r in session.execute(
                    "SELECT partition FROM ivfpq_rotate(%s, '2026-11-25 10:00+00') WHERE action = 'created'",
                    (table,)).fetchall())
            except psycopg.Error as error:
                errors.append(error)

    threads = [threading.Thread(target=rotate) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(created) == [f"public.{table}_p20261125"]
    assert partitions(conn, table) == [f"{table}_p20261120", f"{table}_p20261125"]
    drop_managed(conn, table)


@pytest.fixture
def dump_databases(conn):
    yield from scratch_databases(conn, "rot_dump_source", "rot_dump_restored")


CONFIG_QUERY = ("SELECT parent::text, parent::oid = to_regclass('public.events')::oid, time_column, "
                "partition_interval, premake, retention, vector_column, opclass, index_options, inherit_codebooks, "
                "created_at FROM ivfpq_partitioned_tables")


def test_dump_restore_keeps_configuration(dump_databases):
    """pg_dump + pg_restore into a new database: the configuration row comes
    back pointing at the restored table, and rotation goes on there."""
    source_db, restored_db = dump_databases
    with connect(source_db) as source:
        source.execute("CREATE EXTENSION ivfpq")
        source.execute("CREATE TABLE events (id int, at timestamptz NOT NULL, e vector(4)) PARTITION BY RANGE (at)")
        source.execute("SELECT ivfpq_manage('events', 'at', premake => 1, retention => '3 days', "
                       "index_options => 'lists = 2, m = 2', now => '2026-11-20 10:00+00')")
        source.execute("INSERT INTO events SELECT i, '2026-11-20 00:00+00'::timestamptz + i * interval '1 minute', "
                       "ARRAY[i % 7, i % 5, (i * 3) % 11, i % 2]::vector FROM generate_series(1, 300) i")
        source.execute("REINDEX TABLE events_p20261120")
        # the next day copies the codebooks of the trained one
        created = source.execute("SELECT detail FROM ivfpq_rotate('events', '2026-11-21 10:00+00') "
                                 "WHERE action = 'created'").fetchall()
        assert created == [("index events_p20261122_e_ivfpq, codebooks from events_p20261120_e_ivfpq",)]
        config = source.execute(CONFIG_QUERY).fetchall()
        assert len(config) == 1 and config[0][1]
        dump = subprocess.run([f"{PGBIN}/pg_dump", "-Fc", "-d", source_db],
                              capture_output=True, check=True).stdout

    restore = subprocess.run([f"{PGBIN}/pg_restore", "--exit-on-error", "-d", restored_db],
                             input=dump, capture_output=True)
    assert restore.returncode == 0, restore.stderr.decode()

    with connect(restored_db) as restored:
        # same configuration, parent resolved to the restored table's oid
        assert restored.execute(CONFIG_QUERY).fetchall() == config
        assert restored.execute(
            "SELECT count(*) FROM ivfpq_partitions('events') WHERE index IS NOT NULL").fetchone()[0] == 3
        assert restored.execute("SELECT count(*) FROM events").fetchone()[0] == 300
        # rotation goes on in the restored database: drops the first day
        # after retention, creates the next ones
        actions = restored.execute(
            "SELECT action, partition FROM ivfpq_rotate(now => '2026-11-24 10:00+00')").fetchall()
        assert actions == [("detached", "public.events_p20261120"), ("dropped", "public.events_p20261120"),
                           ("created", "public.events_p20261124"), ("created", "public.events_p20261125")]
        # the dropped day was the codebooks source of 11-22: that index
        # forgot it, so a second dump restores too
        assert restored.execute(
            "SELECT reloptions FROM pg_class WHERE relname = 'events_p20261122_e_ivfpq'").fetchone()[0] \
            == ["lists=2", "m=2"]


def test_pg_cron_runs_rotation(conn):
    """A pg_cron job running ivfpq_rotate() creates the partition of the
    current day (the table was managed with a 2020 clock, so it cannot exist
    unless the job ran)."""
    preload = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
    assert "pg_cron" in preload, "the suite cluster must preload pg_cron (test/run.sh sets it)"
    assert conn.execute("SELECT current_setting('cron.database_name')").fetchone()[0] == \
        conn.execute("SELECT current_database()").fetchone()[0]
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
    table = "rot_cron"
    make_managed(conn, table, "2020-01-01 10:00+00", premake=0)
    assert partitions(conn, table) == [f"{table}_p20200101"]
    covering_now = ("SELECT partition::text FROM ivfpq_partition_bounds(%s) "
                    "WHERE range_from <= %s AND %s < range_to")
    now = conn.execute("SELECT now()").fetchone()[0]
    assert conn.execute(covering_now, (table, now, now)).fetchall() == []

    job = conn.execute(
        "SELECT cron.schedule('ivfpq-rotate-test', '* * * * *', 'SELECT ivfpq_rotate()')").fetchone()[0]
    try:
        deadline = time.monotonic() + 75
        run = None
        while time.monotonic() < deadline:
            run = conn.execute(
                "SELECT status, start_time, return_message FROM cron.job_run_details "
                "WHERE jobid = %s AND status IN ('succeeded', 'failed') ORDER BY start_time LIMIT 1",
                (job,)).fetchone()
            if run:
                break
            time.sleep(0.5)
        assert run is not None, "pg_cron did not run the job within 75 s"
        status, started, message = run
        assert status == "succeeded", message
        # the partition containing the moment the job ran, with its index
        made = conn.execute(covering_now, (table, started, started)).fetchall()
        assert len(made) == 1, made
        assert conn.execute("SELECT index IS NOT NULL FROM ivfpq_partitions(%s) WHERE partition = %s::regclass",
                            (table, made[0][0])).fetchone()[0]
    finally:
        conn.execute("SELECT cron.unschedule(%s)", (job,))
        drop_managed(conn, table)
