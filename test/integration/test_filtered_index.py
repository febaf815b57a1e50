"""Multicolumn ivfpq indexes (embedding, category): the scan checks the
category condition on the index entries before re-ranking.

- A filtered query through the multicolumn index finds the exact filtered
  neighbours far more often than the same query on the vector-only index,
  where the executor drops the rows that fail the condition after the scan.
- Parallel and serial builds store the same filter values: every row passing
  a condition is reachable exactly once through either.
"""
import numpy as np
import psycopg
import pytest

DIM = 32


def load(conn, table, vectors, categories):
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(f"CREATE TABLE {table} (id int, category int, e vector({DIM}))")
    with conn.cursor().copy(f"COPY {table} (id, category, e) FROM STDIN") as copy:
        for i, (row, c) in enumerate(zip(vectors, categories)):
            copy.write_row((i, int(c), "[" + ",".join("%.6g" % x for x in row) + "]"))
    conn.execute(f"ANALYZE {table}")


def clustered(rows, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (40, DIM))
    which = rng.integers(0, len(centres), rows)
    vectors = (centres[which] + rng.normal(0, 0.6, (rows, DIM))).astype(np.float32)
    return vectors, rng.integers(0, 1000, rows)


def recall(conn, table, vectors, categories, queries, where, passing):
    """recall@10 against the exact filtered answer (by distance, so ties are hits)."""
    hits = 0
    rows_returned = 0
    for q in queries:
        text = "[" + ",".join("%.6g" % x for x in q) + "]"
        ids = [r[0] for r in conn.execute(
            f"SELECT id FROM {table} WHERE {where} ORDER BY e <-> %s::vector LIMIT 10", (text,))]
        assert all(passing[i] for i in ids), "a returned row fails the condition"
        rows_returned += len(ids)
        d = ((vectors[passing] - q) ** 2).sum(1)
        kth = np.sort(d)[9]
        got = ((vectors[ids] - q) ** 2).sum(1)
        hits += int((got <= kth * (1 + 1e-5)).sum())
    assert rows_returned == 10 * len(queries)
    return hits / (10 * len(queries))


@pytest.fixture(scope="module")
def filtered_tables():
    """The same rows twice: fi_single with the vector-only index, fi_multi with (e, category)."""
    vectors, categories = clustered(40000, 5)
    with psycopg.connect(autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS ivfpq")
        load(conn, "fi_single", vectors, categories)
        load(conn, "fi_multi", vectors, categories)
        conn.execute("CREATE INDEX fi_single_idx ON fi_single USING ivfpq (e) WITH (lists = 64)")
        conn.execute("CREATE INDEX fi_multi_idx ON fi_multi USING ivfpq (e, category) WITH (lists = 64)")
        conn.execute("ANALYZE fi_single")
        conn.execute("ANALYZE fi_multi")
    yield vectors, categories
    with psycopg.connect(autocommit=True) as conn:
        conn.execute("DROP TABLE fi_single, fi_multi")


@pytest.mark.parametrize("where, test", [
    ("category < 100", lambda c: c < 100),     # 10%
    ("category < 10", lambda c: c < 10),       # 1%
    ("category = 7", lambda c: c == 7),        # 0.1%
])
def test_filter_in_the_index_keeps_recall(conn, filtered_tables, where, test):
    vectors, categories = filtered_tables
    queries, _ = clustered(40, 99)
    passing = test(categories)
    conn.execute("SET enable_seqscan = off")
    conn.execute("SET enable_bitmapscan = off")
    plan = "\n".join(r[0] for r in conn.execute(
        f"EXPLAIN (COSTS OFF) SELECT id FROM fi_multi WHERE {where} ORDER BY e <-> %s::vector LIMIT 10",
        ("[" + ",".join(["0"] * DIM) + "]",)))
    assert "Index Cond" in plan and "fi_multi_idx" in plan, plan
    # ivfpq.probes and ivfpq.rerank at their defaults, as a new user runs it
    in_index = recall(conn, "fi_multi", vectors, categories, queries, where, passing)
    above = recall(conn, "fi_single", vectors, categories, queries, where, passing)
    assert in_index >= 0.9, (in_index, above)
    assert in_index >= above, (in_index, above)
    conn.execute("SET ivfpq.probes = 20")
    conn.execute("SET ivfpq.rerank = 300")
    assert recall(conn, "fi_multi", vectors, categories, queries, where, passing) >= 0.97


def test_parallel_build_stores_filter_values(conn):
    vectors, categories = clustered(60000, 8)
    load(conn, "fp_items", vectors, categories)
    notices = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary))
    conn.execute("SET client_min_messages = debug1")
    conn.execute("SET max_parallel_maintenance_workers = 1")
    conn.execute("SET min_parallel_table_scan_size = 0")
    conn.execute("CREATE INDEX fp_par ON fp_items USING ivfpq (e, category) WITH (lists = 32, m = 8)")
    conn.execute("SET client_min_messages = notice")
    assert any(n.startswith('ivfpq build of "fp_par": 1 of 1') for n in notices), notices
    conn.execute("SET max_parallel_maintenance_workers = 0")
    conn.execute("CREATE INDEX fp_ser ON fp_items USING ivfpq (e, category) WITH (lists = 32, m = 8)")
    assert conn.execute("SELECT count(*) FROM ivfpq_verify('fp_par', true)").fetchone()[0] == 0

    conn.execute("SET enable_seqscan = off")
    conn.execute("SET enable_bitmapscan = off")
    conn.execute("SET ivfpq.rerank = 0")
    zero = "[" + ",".join(["0"] * DIM) + "]"
    expected = sorted(np.flatnonzero(categories < 50).tolist())
    for keep, drop in (("fp_par", "fp_ser"), ("fp_ser", "fp_par")):
        conn.execute("BEGIN")
        conn.execute(f"DROP INDEX {drop}")
        ids = [r[0] for r in conn.execute(
            "SELECT id FROM fp_items WHERE category < 50 ORDER BY e <-> %s::vector", (zero,))]
        conn.execute("ROLLBACK")
        assert sorted(ids) == expected, keep
    conn.execute("DROP TABLE fp_items")
