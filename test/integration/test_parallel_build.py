"""A parallel ivfpq build (max_parallel_maintenance_workers > 0) launches
workers, indexes every row exactly once, and answers like a serial build."""
import numpy as np
import psycopg


def test_parallel_build_matches_serial(conn):
    rng = np.random.default_rng(11)
    rows, dim = 60000, 64
    data = rng.standard_normal((rows, dim), dtype=np.float32)
    conn.execute("DROP TABLE IF EXISTS par_items")
    conn.execute(f"CREATE TABLE par_items (id int, e vector({dim}))")
    with conn.cursor().copy("COPY par_items (id, e) FROM STDIN") as copy:
        for i, row in enumerate(data):
            copy.write_row((i, "[" + ",".join("%.5g" % x for x in row) + "]"))
    conn.execute("ANALYZE par_items")

    notices = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary))
    conn.execute("SET client_min_messages = debug1")
    conn.execute("SET max_parallel_maintenance_workers = 1")
    conn.execute("SET min_parallel_table_scan_size = 0")
    conn.execute("CREATE INDEX par_idx ON par_items USING ivfpq (e) WITH (lists = 50, m = 16)")
    conn.execute("SET client_min_messages = notice")
    launched = [n for n in notices if "parallel workers launched" in n]
    assert launched and launched[-1].startswith('ivfpq build of "par_idx": 1 of 1'), notices

    conn.execute("SET max_parallel_maintenance_workers = 0")
    conn.execute("CREATE INDEX serial_idx ON par_items USING ivfpq (e) WITH (lists = 50, m = 16)")

    par = conn.execute("SELECT rows, lists, list_min, list_max FROM ivfpq_index_stats('par_idx')").fetchone()
    ser = conn.execute("SELECT rows, lists, list_min, list_max FROM ivfpq_index_stats('serial_idx')").fetchone()
    assert par[0] == rows and par == ser

    # Every row reachable exactly once through the parallel-built index.
    conn.execute("DROP INDEX serial_idx")
    conn.execute("SET enable_seqscan = off")
    conn.execute("SET ivfpq.rerank = 0")
    ids = [r[0] for r in conn.execute(
        "SELECT id FROM par_items ORDER BY e <-> %s::vector", ("[" + ",".join(["0"] * dim) + "]",))]
    assert sorted(ids) == list(range(rows))
    conn.execute("DROP TABLE par_items")
