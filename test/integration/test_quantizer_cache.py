"""The per-backend quantizer cache (src/ivfpq_cache.cpp): what a backend keeps
itself when it does not use the shared cache (every session here sets
ivfpq.shared_cache = off; test_shared_cache.py covers the shared one).

- A query cancelled while it loads an index's quantizer (reading pages,
  preparing codebooks) leaves nothing behind: the backend's "ivfpq quantizer"
  memory contexts do not grow; one cancelled while it computes a list's
  distance terms (on the list's first probe) leaves the entry as it was and
  the answers right.
- An inserting session does not build the per-list distance terms; its
  first scan adds them.
- ivfpq.cache_mb bounds the cached quantizers of a backend: beyond it the
  least recently used ones are evicted, and results stay right.
"""
import psycopg
import pytest

ENTRY_MEMORY = """
SELECT count(*), coalesce(sum(total_bytes), 0)
FROM pg_backend_memory_contexts
WHERE name IN ('ivfpq quantizer', 'ivfpq quantizer terms')
"""


@pytest.fixture
def big_index(conn):
    """An index whose quantizer takes a while to load: 4096 lists of term tables."""
    conn.execute("DROP TABLE IF EXISTS cache_items")
    conn.execute("CREATE TABLE cache_items (id int, e vector(64))")
    conn.execute(
        "INSERT INTO cache_items SELECT i, ARRAY(SELECT (i % 97) + random() FROM generate_series(1, 64) d)::vector "
        "FROM generate_series(1, 20000) i")
    conn.execute("SET maintenance_work_mem = '512MB'")
    conn.execute("CREATE INDEX cache_items_idx ON cache_items USING ivfpq (e) WITH (lists = 4096, m = 32)")
    yield "cache_items"
    conn.execute("DROP TABLE cache_items")


def test_cancelled_load_leaves_no_memory(big_index):
    query = ("SELECT id FROM cache_items ORDER BY e <-> "
             "(SELECT ARRAY(SELECT 1.5 FROM generate_series(1, 64))::vector) LIMIT 5")
    with psycopg.connect(autocommit=True) as conn:
        conn.execute("SET ivfpq.shared_cache = off")
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET ivfpq.table_cache_mb = 256")
        # Warm everything but our cache: catalogs, relcache, the heap.
        conn.execute("SELECT count(*) FROM cache_items").fetchone()
        assert conn.execute(ENTRY_MEMORY).fetchone() == (0, 0)

        cancelled = 0
        for timeout_ms in (1, 2, 5, 10, 20, 40, 80, 160):
            conn.execute(f"SET statement_timeout = '{timeout_ms}ms'")
            try:
                conn.execute(query).fetchall()
                completed = True
            except psycopg.errors.QueryCanceled:
                cancelled += 1
                completed = False
            conn.execute("RESET statement_timeout")
            count, total = conn.execute(ENTRY_MEMORY).fetchone()
            if completed or count > 0:
                # The load finished (the scan after it may have been cancelled): one whole entry.
                assert count == 1 and total > 4096 * 32 * 256, (count, total)
                break
            assert (count, total) == (0, 0), f"a cancelled load left {count} contexts, {total} bytes behind"
        assert cancelled >= 3, "too few loads were cancelled for the test to prove anything"

        # The next query loads the quantizer once, completely, with room for the terms.
        conn.execute(query).fetchall()
        count, total = conn.execute(ENTRY_MEMORY).fetchone()
        assert count == 1 and total > 4096 * 32 * 256

        # A list's terms are computed on its first probe: probing all 4096 lists takes a
        # while, and scans cancelled while computing them leave the entry as it was and
        # the answers right (a list cancelled half-way is computed again).
        conn.execute("SET ivfpq.probes = 4096")
        conn.execute("SET ivfpq.rerank = 100000")
        cancelled = 0
        for timeout_ms in (5, 10, 20, 40, 80, 160, 320):
            conn.execute(f"SET statement_timeout = '{timeout_ms}ms'")
            try:
                conn.execute(query).fetchall()
            except psycopg.errors.QueryCanceled:
                cancelled += 1
            conn.execute("RESET statement_timeout")
            assert conn.execute(ENTRY_MEMORY).fetchone() == (count, total)
        assert cancelled >= 3, "too few scans were cancelled while computing terms"
        got = [r[0] for r in conn.execute(query.replace("LIMIT 5", "LIMIT 50")).fetchall()]
        conn.execute("SET enable_indexscan = off; SET enable_seqscan = on")
        exact = [r[0] for r in conn.execute(query.replace("LIMIT 5", "LIMIT 50")).fetchall()]
        assert got == exact


def test_cache_budget(conn):
    conn.execute("DROP TABLE IF EXISTS budget_items")
    conn.execute("CREATE TABLE budget_items (id int, part int, e vector(32))")
    conn.execute(
        "INSERT INTO budget_items SELECT i, i % 6, ARRAY(SELECT (i % 13) + random() FROM generate_series(1, 32) d)::vector "
        "FROM generate_series(1, 12000) i")
    for p in range(6):
        conn.execute(f"CREATE TABLE budget_part_{p} AS SELECT * FROM budget_items WHERE part = {p}")
        conn.execute(f"CREATE INDEX budget_part_{p}_idx ON budget_part_{p} USING ivfpq (e) WITH (lists = 64, m = 16)")
    try:
        with psycopg.connect(autocommit=True) as session:
            session.execute("SET ivfpq.shared_cache = off")
            session.execute("SET enable_seqscan = off")
            session.execute("SET ivfpq.probes = 64")
            sizes = []
            for p in range(6):
                session.execute(f"SELECT id FROM budget_part_{p} ORDER BY e <-> (SELECT e FROM budget_items WHERE id = 1) LIMIT 3").fetchall()
                sizes.append(session.execute(ENTRY_MEMORY).fetchone())
            assert sizes[-1][0] == 6, "without pressure every quantizer stays cached"
            entry = max(total for _, total in sizes) // 6 + 1

            # A budget of about two entries: never more than that plus the one in use.
            session.execute("SET ivfpq.cache_mb = 1")
            per_mb = (1024 * 1024) // entry
            for round_ in range(2):
                for p in range(6):
                    sql = f"SELECT id FROM budget_part_{p} ORDER BY e <-> (SELECT e FROM budget_items WHERE id = 7) LIMIT 3"
                    got = [r[0] for r in session.execute(sql).fetchall()]
                    session.execute("SET enable_indexscan = off; SET enable_seqscan = on")
                    exact = [r[0] for r in session.execute(sql).fetchall()]
                    session.execute("RESET enable_indexscan; SET enable_seqscan = off")
                    assert got == exact
                    count, total = session.execute(ENTRY_MEMORY).fetchone()
                    assert total <= 1024 * 1024 + entry, f"{total} bytes cached over a 1 MB budget"
                    assert count <= max(per_mb, 0) + 1
            assert count < 6, "the budget evicted nothing"
    finally:
        for p in range(6):
            conn.execute(f"DROP TABLE IF EXISTS budget_part_{p}")
        conn.execute("DROP TABLE budget_items")


def test_inserts_do_not_build_term_tables(big_index):
    """An inserting session loads centroids and codebooks only; the term tables
    (room for 4096 lists x 32 x 264 bytes here) come with the session's first scan."""
    with psycopg.connect(autocommit=True) as conn:
        conn.execute("SET ivfpq.shared_cache = off")
        conn.execute("SET ivfpq.table_cache_mb = 256")
        conn.execute("INSERT INTO cache_items SELECT 0, ARRAY(SELECT 1.5 FROM generate_series(1, 64))::vector")
        count, after_insert = conn.execute(ENTRY_MEMORY).fetchone()
        assert count == 1
        assert after_insert < 4 * 1024 * 1024, f"{after_insert} bytes cached after an insert"
        conn.execute("SET enable_seqscan = off")
        conn.execute("SELECT id FROM cache_items ORDER BY e <-> "
                     "(SELECT ARRAY(SELECT 1.5 FROM generate_series(1, 64))::vector) LIMIT 5").fetchall()
        count, after_scan = conn.execute(ENTRY_MEMORY).fetchone()
        assert after_scan - after_insert > 4096 * 32 * 256, "the scan did not add the term tables"
