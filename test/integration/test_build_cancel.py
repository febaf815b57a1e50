"""Cancelling a long ivfpq operation stops it promptly, even inside FAISS.

A CREATE INDEX is cancelled with pg_cancel_backend() while the progress view
says it is training (a phase spent in FAISS k-means on OpenMP threads); the
error must be a query cancel (57014), arrive within seconds, leave no index
behind, and the session must stay usable.  The same for ivfpq_kmeans().
"""
import threading
import time

import numpy as np
import psycopg
import pytest


def load_random_vectors(conn, table, rows, dim, seed=7):
    """Create table(id, e vector(dim)) filled with random vectors via COPY."""
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((rows, dim), dtype=np.float32)
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(f"CREATE TABLE {table} (id int, e vector({dim}))")
    with conn.cursor().copy(f"COPY {table} (id, e) FROM STDIN") as copy:
        for i, row in enumerate(data):
            copy.write_row((i, "[" + ",".join("%.6g" % x for x in row) + "]"))


def run_and_cancel(conn, sql, wait_for_phase=None, wait_seconds=0.5):
    """Run sql in a second session, cancel it, return (error, seconds from cancel to error)."""
    worker = psycopg.connect(autocommit=True)
    pid = worker.info.backend_pid
    outcome = {}

    def target():
        try:
            worker.execute(sql)
            outcome["error"] = None
        except psycopg.Error as error:  # the cancel shows up here
            outcome["error"] = error
        outcome["finished"] = time.monotonic()

    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.monotonic() + 60
    if wait_for_phase:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT phase FROM pg_stat_progress_create_index WHERE pid = %s", (pid,)
            ).fetchone()
            if row and wait_for_phase in row[0]:
                break
            time.sleep(0.02)
        else:
            pytest.fail(f"never saw phase {wait_for_phase!r}")
    time.sleep(wait_seconds)
    assert thread.is_alive(), "the statement finished before it could be cancelled"
    cancelled_at = time.monotonic()
    assert conn.execute("SELECT pg_cancel_backend(%s)", (pid,)).fetchone()[0]
    thread.join(30)
    assert not thread.is_alive(), "statement did not stop within 30 s of the cancel"
    still_usable = worker.execute("SELECT 42").fetchone()[0] == 42
    worker.close()
    return outcome["error"], outcome["finished"] - cancelled_at, still_usable


def test_cancel_index_build_during_training(conn):
    load_random_vectors(conn, "cancel_items", 40000, 128)
    conn.execute("SET maintenance_work_mem = '512MB'")
    error, seconds, usable = run_and_cancel(
        conn,
        "SET maintenance_work_mem = '512MB'; "
        "CREATE INDEX cancel_idx ON cancel_items USING ivfpq (e) WITH (lists = 1000, m = 64)",
        wait_for_phase="training",
    )
    assert isinstance(error, psycopg.errors.QueryCanceled), error
    assert seconds < 3.0, f"cancel took {seconds:.2f} s"
    assert usable
    assert conn.execute("SELECT to_regclass('cancel_idx')").fetchone()[0] is None
    conn.execute("DROP TABLE cancel_items")


def test_build_progress_phases_and_success(conn):
    """The same build, left alone, reports its phases and completes."""
    load_random_vectors(conn, "progress_items", 20000, 32)
    worker = psycopg.connect(autocommit=True)
    pid = worker.info.backend_pid
    seen = set()
    thread = threading.Thread(
        target=lambda: worker.execute(
            "CREATE INDEX progress_idx ON progress_items USING ivfpq (e) WITH (lists = 200, m = 8)"
        )
    )
    thread.start()
    while thread.is_alive():
        row = conn.execute(
            "SELECT phase FROM pg_stat_progress_create_index WHERE pid = %s", (pid,)
        ).fetchone()
        if row:
            seen.add(row[0])
        time.sleep(0.005)
    thread.join()
    worker.close()
    assert any("training" in phase for phase in seen), seen
    stats = conn.execute("SELECT rows, lists FROM ivfpq_index_stats('progress_idx')").fetchone()
    assert stats == (20000, 200)
    conn.execute("DROP TABLE progress_items")


def test_cancel_kmeans(conn):
    conn.execute("DROP TABLE IF EXISTS kmeans_points")
    conn.execute(
        "CREATE TABLE kmeans_points AS SELECT array_agg(ARRAY(SELECT random() "
        "FROM generate_series(1, 32) WHERE i > 0)::vector) AS vs FROM generate_series(1, 20000) i"
    )
    error, seconds, usable = run_and_cancel(
        conn, "SELECT ivfpq_kmeans(vs, 1000, 10000) FROM kmeans_points", wait_seconds=1.0
    )
    assert isinstance(error, psycopg.errors.QueryCanceled), error
    assert seconds < 2.0, f"cancel took {seconds:.2f} s"
    assert usable
    conn.execute("DROP TABLE kmeans_points")
