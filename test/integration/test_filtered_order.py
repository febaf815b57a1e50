"""Filtered queries keep their recall (src/ivfpq_scan.cpp, ivfpqgettuple).

`WHERE category < c ORDER BY e <-> q LIMIT 10` runs as an ivfpq index scan
with a filter above it: the executor drops the rows that fail the filter and
stops at the tenth that passes.  The scan returns re-ranked rows only when no
unconsumed candidate is likely to be closer (re-ranking and merging the next
batch first), and, once it has returned more than a batch, only rows no
farther than the next unprobed list's centroid (probing that list first).  So
the rows that pass come out close to exact order and the filtered answer
keeps its recall: at 10% and 1% selectivity recall@10 against the exact
filtered answer is at least 0.9 (0.96 and 0.93 measured; 0.81 at 1% when
every batch went out in its own order).
"""
import numpy as np
import pytest

DIM = 32
ROWS = 20_000
LISTS = 40
QUERIES = 40


def vec(x):
    return "[" + ",".join(f"{v:.5f}" for v in x) + "]"


@pytest.fixture
def filtered(conn):
    rng = np.random.default_rng(11)
    centres = rng.standard_normal((60, DIM)) * 4
    rows = (centres[rng.integers(0, 60, ROWS)] + rng.standard_normal((ROWS, DIM))).astype(np.float32)
    category = rng.integers(0, 1000, ROWS)
    conn.execute("DROP TABLE IF EXISTS filt")
    conn.execute(f"CREATE TABLE filt (id int PRIMARY KEY, category int, e vector({DIM}))")
    with conn.cursor().copy("COPY filt (id, category, e) FROM STDIN") as copy:
        for i in range(ROWS):
            copy.write_row((i, int(category[i]), vec(rows[i])))
    conn.execute(f"CREATE INDEX filt_idx ON filt USING ivfpq (e) WITH (lists = {LISTS}, m = 16)")
    conn.execute("ANALYZE filt")
    queries = (centres[rng.integers(0, 60, QUERIES)] + rng.standard_normal((QUERIES, DIM))).astype(np.float32)
    yield conn, rows, category, queries
    conn.execute("DROP TABLE IF EXISTS filt")


@pytest.mark.parametrize("limit_category", [100, 10])
def test_filtered_recall(filtered, limit_category):
    conn, rows, category, queries = filtered
    conn.execute("SET enable_seqscan = off")
    conn.execute("SET enable_bitmapscan = off")
    conn.execute("SET ivfpq.probes = 4")
    conn.execute("SET ivfpq.rerank = 20")
    passing = np.flatnonzero(category < limit_category)
    sql = f"SELECT id FROM filt WHERE category < {limit_category} ORDER BY e <-> %s::vector LIMIT 10"
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, (vec(queries[0]),)))
    assert "filt_idx" in plan, plan
    hits = 0
    for q in queries:
        got = [r[0] for r in conn.execute(sql, (vec(q),))]
        assert len(got) == 10
        d = ((rows[passing].astype(np.float64) - q) ** 2).sum(axis=1)
        tenth = np.sort(d)[9]
        exact = ((rows[got].astype(np.float64) - q) ** 2).sum(axis=1)
        hits += int((exact <= tenth * (1 + 1e-6)).sum())
    recall = hits / (10 * len(queries))
    for setting in ("enable_seqscan", "enable_bitmapscan", "ivfpq.probes", "ivfpq.rerank"):
        conn.execute(f"RESET {setting}")
    assert recall >= 0.9, f"recall@10 {recall:.3f} at {limit_category / 10:g}% selectivity"
