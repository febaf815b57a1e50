"""The heap re-rank and the build on compressed rows (default storage).

Vectors that compress (pixel-like rows, half zeros, long zero runs) are stored
inline and pglz-compressed by the type's default storage; the re-rank and the
build decode them with the core's pglz decoder instead of the server's.  With
every list probed and every row re-ranked, the index answers exactly what a
sequential scan answers, with the same distances, whether the rows are pglz-
or lz4-compressed (the server's decoder) or stored raw (distances checked against numpy's, since the distance
operator decodes arguments with the same decoder), and ivfpq_verify is
clean after a build from compressed rows.
"""
import numpy as np
import pytest

DIM = 784
ROWS = 1500
LISTS = 8
M = 16


def vec(row):
    return "[" + ",".join("%g" % x for x in row) + "]"


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(21)
    rows = np.where(rng.random((ROWS, DIM)) < 0.5, 0, rng.integers(1, 256, (ROWS, DIM))).astype(np.float32)
    rows[:, :84] = 0          # an image's blank top rows
    rows[:, -84:] = 0
    rows[::7, 100:400] = 0    # some rows mostly blank: runs of zero floats
    queries = np.where(rng.random((12, DIM)) < 0.5, 0, rng.integers(1, 256, (12, DIM))).astype(np.float32)
    return rows, queries


def make_table(conn, name, rows, compression=None, options=""):
    conn.execute(f"DROP TABLE IF EXISTS {name}")
    conn.execute(f"CREATE TABLE {name} (id int, e vector({DIM})) {options}")
    if compression:
        conn.execute(f"ALTER TABLE {name} ALTER COLUMN e SET COMPRESSION {compression}")
    with conn.cursor().copy(f"COPY {name} (id, e) FROM STDIN") as copy:
        for i, row in enumerate(rows):
            copy.write_row((i, vec(row)))
    conn.execute(f"CREATE INDEX {name}_e ON {name} USING ivfpq (e) WITH (lists = {LISTS}, m = {M})")
    conn.execute(f"ANALYZE {name}")


def answers(conn, table, q, use_index):
    conn.execute(f"SET enable_indexscan = {'on' if use_index else 'off'}")
    conn.execute(f"SET enable_seqscan = {'off' if use_index else 'on'}")
    conn.execute(f"SET enable_bitmapscan = off")
    sql = f"SELECT id, e <-> %s::vector FROM {table} ORDER BY e <-> %s::vector LIMIT 25"
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, (vec(q), vec(q))).fetchall())
    assert ("Index Scan" in plan) == use_index, plan
    return conn.execute(sql, (vec(q), vec(q))).fetchall()


@pytest.mark.parametrize("storage", ["pglz", "lz4", "raw"])
def test_exact_answers_from_compressed_rows(conn, data, storage):
    rows, queries = data
    table = f"cr_{storage}"
    if storage == "raw":
        make_table(conn, table, rows, options="WITH (toast_tuple_target = 8160)")
    else:
        make_table(conn, table, rows, compression=storage)
    raw_size = 8 + 4 * DIM
    sizes = conn.execute(f"SELECT min(pg_column_size(e)), max(pg_column_size(e)), "
                         f"count(*) FILTER (WHERE pg_column_compression(e) IS NOT NULL) FROM {table}").fetchone()
    if storage == "raw":
        assert sizes[0] == raw_size and sizes[2] == 0
    else:
        # Every row is stored compressed with the method asked for.
        assert sizes[1] < raw_size * 0.8 and sizes[2] == ROWS
        methods = conn.execute(f"SELECT DISTINCT pg_column_compression(e) FROM {table}").fetchall()
        assert methods == [(storage,)]
    # The build read every row.
    assert conn.execute(f"SELECT count(*) FROM ivfpq_verify('{table}_e', true)").fetchone()[0] == 0
    assert conn.execute(f"SELECT rows FROM ivfpq_index_stats('{table}_e')").fetchone()[0] == ROWS

    conn.execute(f"SET ivfpq.probes = {LISTS}")
    conn.execute(f"SET ivfpq.rerank = {ROWS}")
    for q in queries:
        # The truth from the Python side: both scans below decode through ivfpq.
        truth = np.sqrt(((rows.astype(np.float64) - q) ** 2).sum(axis=1))
        best = np.sort(truth)[:25]
        for use_index in (False, True):
            found = answers(conn, table, q, use_index)
            ids = [r[0] for r in found]
            assert len(set(ids)) == 25
            # Each row's distance is its true one, and they are the 25 smallest.
            assert np.allclose([r[1] for r in found], truth[ids], rtol=1e-5)
            assert np.allclose([r[1] for r in found], best, rtol=1e-5)
    conn.execute(f"DROP TABLE {table}")
