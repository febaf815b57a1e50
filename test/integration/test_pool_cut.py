"""The pool cut (ivfpq.pool_cut): a scan of 8-bit codes keeps only its best
candidates once it has many, and probes its lists again when it needs more.

The rows and distances returned are the same with the cut and without it, at
LIMIT 10, at a LIMIT of several batches, and far past the cut (which makes
the scan probe its lists again); with every list probed, an ordered scan past
the end returns every row exactly once; and for inner product too.
"""
import numpy as np
import pytest

DIM = 32
ROWS = 20_000
LISTS = 20


def vec(row):
    return "[" + ",".join("%.6g" % x for x in row) + "]"


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(17)
    centers = rng.standard_normal((40, DIM)).astype(np.float32) * 3
    rows = (centers[rng.integers(0, 40, ROWS)] + rng.standard_normal((ROWS, DIM))).astype(np.float32)
    queries = (centers[rng.integers(0, 40, 12)] + rng.standard_normal((12, DIM))).astype(np.float32)
    return rows, queries


@pytest.fixture(params=["l2", "ip"])
def items(request, conn, data):
    rows, _ = data
    opclass, op = {"l2": ("vector_l2_ops", "<->"), "ip": ("vector_ip_ops", "<#>")}[request.param]
    conn.execute("DROP TABLE IF EXISTS pc_items")
    conn.execute(f"CREATE TABLE pc_items (id int, e vector({DIM}))")
    with conn.cursor().copy("COPY pc_items (id, e) FROM STDIN") as copy:
        for i, row in enumerate(rows):
            copy.write_row((i, vec(row)))
    conn.execute(f"CREATE INDEX pc_items_e ON pc_items USING ivfpq (e {opclass}) WITH (lists = {LISTS}, m = 8)")
    conn.execute("VACUUM ANALYZE pc_items")
    conn.execute("SET enable_seqscan = off")
    conn.execute("SET enable_bitmapscan = off")
    yield op
    conn.execute("DROP TABLE IF EXISTS pc_items")


def search(conn, op, q, limit):
    return conn.execute(f"SELECT id, e {op} %s::vector FROM pc_items ORDER BY e {op} %s::vector LIMIT %s",
                        (vec(q), vec(q), limit)).fetchall()


@pytest.mark.parametrize("probes,rerank", [(10, 10), (10, 100), (20, 50)])
def test_same_rows_with_and_without_the_cut(conn, data, items, probes, rerank):
    _, queries = data
    conn.execute(f"SET ivfpq.probes = {probes}")
    conn.execute(f"SET ivfpq.rerank = {rerank}")
    # LIMIT 10; several batches; far past the cut (4 x rerank, at least 1024 kept)
    for limit in (10, 5 * rerank, 3000):
        for q in queries[:6]:
            conn.execute("SET ivfpq.pool_cut = off")
            whole = search(conn, items, q, limit)
            conn.execute("SET ivfpq.pool_cut = on")
            cut = search(conn, items, q, limit)
            assert [r[0] for r in cut] == [r[0] for r in whole], (limit, q[:3])
            assert np.allclose([r[1] for r in cut], [r[1] for r in whole])
            assert len(cut) == limit


def test_every_row_once_past_the_end(conn, data, items):
    _, queries = data
    conn.execute(f"SET ivfpq.probes = {LISTS}")
    conn.execute("SET ivfpq.rerank = 10")
    conn.execute("SET ivfpq.pool_cut = on")
    for q in queries[:2]:
        ids = [r[0] for r in search(conn, items, q, ROWS + 100)]
        assert len(ids) == ROWS and len(set(ids)) == ROWS
