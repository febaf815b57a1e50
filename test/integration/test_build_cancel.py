"""Cancelling a long ivfpq operation stops it promptly, even inside FAISS.

A CREATE INDEX is cancelled with pg_cancel_backend() while the progress view
says it is training (a phase spent in FAISS k-means on OpenMP threads); the
error must be a query cancel (57014), arrive within CANCEL_LIMIT_SECONDS of the
cancel (far less than the training left), before the build leaves the training
phase, leave no index behind, and the session must stay usable.  The same for
ivfpq_kmeans() while it runs on the CPU.
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


# Time allowed from pg_cancel_backend() to the error.  Training polls the
# interrupt flag many times a second; the margin is for a loaded 2-core machine.
CANCEL_LIMIT_SECONDS = 15.0


def build_phase(conn, pid):
    """The CREATE INDEX phase of backend pid, or None if it is not building."""
    row = conn.execute(
        "SELECT phase FROM pg_stat_progress_create_index WHERE pid = %s", (pid,)
    ).fetchone()
    return row[0] if row else None


def running_on_cpu(conn, pid):
    """True while backend pid runs a statement and waits on nothing (no lock, no I/O)."""
    row = conn.execute(
        "SELECT state = 'active' AND wait_event IS NULL FROM pg_stat_activity WHERE pid = %s",
        (pid,),
    ).fetchone()
    return bool(row and row[0])


def run_and_cancel(conn, sql, busy, wait_seconds=1.0):
    """Run sql in a second session; once busy(pid) has held for wait_seconds,
    cancel it.  Returns (error, seconds from the cancel to the error, whether
    the session is still usable, the build phases seen after the cancel)."""
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
    deadline = time.monotonic() + 120
    while not busy(pid):
        assert thread.is_alive(), f"statement ended before it got busy: {outcome}"
        assert time.monotonic() < deadline, "statement never got busy"
        time.sleep(0.02)
    time.sleep(wait_seconds)
    # still where the cancel must land, right before it is sent
    assert thread.is_alive() and busy(pid), "the statement left the phase before the cancel"
    cancelled_at = time.monotonic()
    assert conn.execute("SELECT pg_cancel_backend(%s)", (pid,)).fetchone()[0]
    phases_after_cancel = set()
    while thread.is_alive() and time.monotonic() < cancelled_at + 120:
        phase = build_phase(conn, pid)
        if phase:
            phases_after_cancel.add(phase)
        time.sleep(0.01)
    thread.join(1)
    assert not thread.is_alive(), "statement did not stop within 120 s of the cancel"
    still_usable = worker.execute("SELECT 42").fetchone()[0] == 42
    worker.close()
    return outcome["error"], outcome["finished"] - cancelled_at, still_usable, phases_after_cancel


def test_cancel_index_build_during_training(conn):
    """Cancelled a second into the training phase (FAISS k-means over 16000
    lists), the build stops inside that phase: left alone this training takes
    about 45 s on 2 cores, three times the limit, and the phase must not
    advance between the cancel and the error."""
    load_random_vectors(conn, "cancel_items", 40000, 128)
    conn.execute("SET maintenance_work_mem = '512MB'")

    def training(pid):
        phase = build_phase(conn, pid)
        return phase is not None and "training" in phase and running_on_cpu(conn, pid)

    error, seconds, usable, phases = run_and_cancel(
        conn,
        "SET maintenance_work_mem = '512MB'; "
        "CREATE INDEX cancel_idx ON cancel_items USING ivfpq (e) WITH (lists = 16000, m = 64)",
        training,
    )
    assert isinstance(error, psycopg.errors.QueryCanceled), error
    assert error.sqlstate == "57014"
    assert seconds < CANCEL_LIMIT_SECONDS, f"cancel took {seconds:.2f} s"
    assert all("training" in phase for phase in phases), phases
    assert usable
    assert conn.execute("SELECT to_regclass('cancel_idx')").fetchone()[0] is None
    assert conn.execute(
        "SELECT count(*) FROM pg_index WHERE indrelid = 'cancel_items'::regclass"
    ).fetchone()[0] == 0
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
    """ivfpq_kmeans on 20000 x 32 points, 1000 clusters, 10000 iterations runs
    for many minutes inside FAISS; cancelled after a second of running on the
    CPU, it stops within the limit."""
    conn.execute("DROP TABLE IF EXISTS kmeans_points")
    conn.execute(
        "CREATE TABLE kmeans_points AS SELECT array_agg(ARRAY(SELECT random() "
        "FROM generate_series(1, 32) WHERE i > 0)::vector) AS vs FROM generate_series(1, 20000) i"
    )
    error, seconds, usable, _ = run_and_cancel(
        conn,
        "SELECT ivfpq_kmeans(vs, 1000, 10000) FROM kmeans_points",
        lambda pid: running_on_cpu(conn, pid),
    )
    assert isinstance(error, psycopg.errors.QueryCanceled), error
    assert error.sqlstate == "57014"
    assert seconds < CANCEL_LIMIT_SECONDS, f"cancel took {seconds:.2f} s"
    assert usable
    conn.execute("DROP TABLE kmeans_points")
