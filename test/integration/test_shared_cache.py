"""The quantizer cache shared by all backends (src/ivfpq_shared_cache.cpp).

The suite cluster preloads ivfpq with ivfpq.shared_cache_mb = 32 (test/run.sh).

- One copy per index, whatever the number of connections: every session
  after the first finds it (hits), keeps only a few kB of its own,
  and answers exactly as a session with its own copy (ivfpq.shared_cache =
  off) does; distance terms computed by one session serve the others.
- REINDEX replaces the shared copy; results follow the new index.
- The shared memory never holds more than ivfpq.shared_cache_mb: beyond it
  the least recently used entries no transaction uses are evicted, entries
  in use by an open transaction stay, and a quantizer larger than the whole
  cache stays private to its backend.  Results stay right throughout.
"""
import psycopg
import pytest

LOCAL_MEMORY = """
SELECT count(*), coalesce(sum(total_bytes), 0)
FROM pg_backend_memory_contexts
WHERE name IN ('ivfpq quantizer', 'ivfpq quantizer terms') AND ident = %s
"""

ENTRY = """
SELECT bytes, pins, hits, lists, lists_with_terms FROM ivfpq_shared_cache()
WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND index = %s::regclass
"""


def session(**settings):
    conn = psycopg.connect(autocommit=True)
    conn.execute("SET enable_seqscan = off")
    for name, value in settings.items():
        conn.execute(f"SET ivfpq.{name} = {value}")
    return conn


def nearest(conn, table, query_id, limit=10):
    return conn.execute(
        f"SELECT id, e <-> (SELECT e FROM {table} WHERE id = %s) FROM {table} "
        f"ORDER BY e <-> (SELECT e FROM {table} WHERE id = %s) LIMIT {limit}",
        (query_id, query_id)).fetchall()


def exact(conn, table, query_id, limit=10):
    conn.execute("SET enable_indexscan = off; SET enable_bitmapscan = off; SET enable_seqscan = on")
    try:
        return nearest(conn, table, query_id, limit)
    finally:
        conn.execute("RESET enable_indexscan; RESET enable_bitmapscan; SET enable_seqscan = off")


def make_table(conn, name, rows, dim, lists, m, seed=0):
    conn.execute(f"DROP TABLE IF EXISTS {name}")
    conn.execute(f"CREATE TABLE {name} (id int, e vector({dim}))")
    conn.execute(
        f"INSERT INTO {name} SELECT i, ARRAY(SELECT sin(i * 0.37 + d * 1.3 + (i % 23) * d + {seed})::real "
        f"FROM generate_series(1, {dim}) d)::vector FROM generate_series(1, {rows}) i")
    conn.execute(f"CREATE INDEX {name}_idx ON {name} USING ivfpq (e) WITH (lists = {lists}, m = {m})")


@pytest.fixture
def shared(conn):
    preload = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
    assert "ivfpq" in preload, "the suite cluster must preload ivfpq (test/run.sh sets it)"
    stats = conn.execute("SELECT capacity_bytes FROM ivfpq_shared_cache_stats()").fetchall()
    assert stats == [(32 * 1024 * 1024,)]
    yield conn


@pytest.fixture
def items(shared):
    make_table(shared, "shared_items", 6000, 32, 64, 8)
    yield "shared_items"
    shared.execute("DROP TABLE shared_items")


def test_one_copy_for_all_connections(shared, items):
    private = session(shared_cache="off", probes=64, rerank=1000)
    sessions = [session(probes=64, rerank=1000) for _ in range(4)]
    try:
        answers = [nearest(s, items, 17) for s in sessions]
        assert all(a == answers[0] for a in answers)
        assert answers[0] == nearest(private, items, 17) == exact(private, items, 17)

        bytes_, pins, hits, lists, with_terms = shared.execute(ENTRY, (items + "_idx",)).fetchone()
        assert hits == 3, "the three sessions after the first found the shared copy"
        assert pins == 0, "pins end with the transaction"
        assert lists == 64 and with_terms == 64, "probing every list computed every list's terms"
        # centroids 64 x 32 floats and codebooks 8 x 256 x 4 floats, plus the term tables
        assert bytes_ > 4 * (64 * 32 + 8 * 256 * 4) + 64 * 8 * 256

        # Each sharing session keeps a few kB (the first one the blocks its load
        # left); the private one the whole quantizer with room for its terms.
        for s in sessions:
            count, total = s.execute(LOCAL_MEMORY, (items + "_idx",)).fetchone()
            assert count == 1 and total <= 32 * 1024, total
        count, total = private.execute(LOCAL_MEMORY, (items + "_idx",)).fetchone()
        assert count == 1 and total > 4 * (64 * 32 + 8 * 256 * 4) + 64 * 8 * 256, total

        # Terms computed by the others serve a new session, which computes none.
        late = session(probes=64, rerank=1000)
        try:
            assert nearest(late, items, 17) == answers[0]
            assert nearest(late, items, 2500) == exact(late, items, 2500)
        finally:
            late.close()
        assert shared.execute(ENTRY, (items + "_idx",)).fetchone()[2] == 4
    finally:
        private.close()
        for s in sessions:
            s.close()


def test_reindex_replaces_the_shared_copy(shared, items):
    reader = session(probes=64, rerank=1000)
    try:
        before = nearest(reader, items, 40)
        shared.execute(f"DELETE FROM {items} WHERE id % 3 = 0")
        shared.execute(f"UPDATE {items} SET e = ARRAY(SELECT cos(id * 0.2 + d)::real "
                       "FROM generate_series(1, 32) d)::vector WHERE id % 3 = 1")
        shared.execute(f"REINDEX INDEX {items}_idx")
        after = nearest(reader, items, 40)
        assert after != before
        assert after == exact(reader, items, 40)
        rows = shared.execute(ENTRY, (items + "_idx",)).fetchall()
        assert len(rows) == 1 and rows[0][2] == 0, "one fresh entry, found by nobody yet"
        other = session(probes=64, rerank=1000)
        try:
            assert nearest(other, items, 40) == after
        finally:
            other.close()
        assert shared.execute(ENTRY, (items + "_idx",)).fetchone()[2] == 1
    finally:
        reader.close()


@pytest.fixture
def many(shared):
    """Five indexes of about 9 MB each in the shared cache (term tables of 512
    lists x 64 sub-quantizers): more than the 32 MB it has."""
    names = [f"shared_many_{i}" for i in range(5)]
    for i, name in enumerate(names):
        make_table(shared, name, 3000, 128, 512, 64, seed=i)
    yield names
    for name in names:
        shared.execute(f"DROP TABLE {name}")


def test_budget_evicts_unused_entries_only(shared, many):
    capacity = 32 * 1024 * 1024
    evictions_before = shared.execute("SELECT evictions FROM ivfpq_shared_cache_stats()").fetchone()[0]
    holder = session(probes=512, rerank=3000, table_cache_mb=64)
    other = session(probes=512, rerank=3000, table_cache_mb=64)
    try:
        # An open transaction uses the first index: its entry must survive the others.
        holder.execute("BEGIN")
        first = nearest(holder, many[0], 5)
        assert shared.execute(ENTRY, (many[0] + "_idx",)).fetchone()[1] == 1
        for round_ in range(2):
            for name in many[1:]:
                assert nearest(other, name, 11 + round_) == exact(other, name, 11 + round_)
                used, entries = shared.execute(
                    "SELECT used_bytes, entries FROM ivfpq_shared_cache_stats()").fetchone()
                assert used <= capacity
            row = shared.execute(ENTRY, (many[0] + "_idx",)).fetchone()
            assert row is not None and row[1] == 1, "an entry in use was evicted"
        assert nearest(holder, many[0], 5) == first
        holder.execute("COMMIT")
        assert shared.execute(ENTRY, (many[0] + "_idx",)).fetchone()[1] == 0
        evictions = shared.execute("SELECT evictions FROM ivfpq_shared_cache_stats()").fetchone()[0]
        assert evictions > evictions_before, "five 9 MB entries fitted in 32 MB"
        present = [name for name in many
                   if shared.execute(ENTRY, (name + "_idx",)).fetchone() is not None]
        assert 0 < len(present) < len(many)

        # A session whose entry was evicted since its last transaction reads it again.
        for name in many:
            assert nearest(holder, name, 99) == exact(holder, name, 99)
    finally:
        holder.close()
        other.close()


def test_too_large_for_the_cache_stays_private(shared):
    """With room for the terms of 4096 lists (about 70 MB) the quantizer does
    not fit 32 MB: the backend keeps it, the shared cache counts a refusal."""
    refusals_before = shared.execute("SELECT refusals FROM ivfpq_shared_cache_stats()").fetchone()[0]
    shared.execute("DROP TABLE IF EXISTS shared_huge")
    make_table(shared, "shared_huge", 8000, 64, 4096, 64)
    s = session(probes=64, rerank=1000, table_cache_mb=512)
    try:
        got = nearest(s, "shared_huge", 3)
        assert shared.execute(ENTRY, ("shared_huge_idx",)).fetchone() is None
        refusals = shared.execute("SELECT refusals FROM ivfpq_shared_cache_stats()").fetchone()[0]
        assert refusals > refusals_before
        count, total = s.execute(LOCAL_MEMORY, ("shared_huge_idx",)).fetchone()
        assert count == 1 and total > 4096 * 64 * 4
        s.execute("SET ivfpq.probes = 4096")
        s.execute("SET ivfpq.rerank = 100000")
        assert nearest(s, "shared_huge", 3) == exact(s, "shared_huge", 3)
        assert got[0][0] == 3
    finally:
        s.close()
        shared.execute("DROP TABLE shared_huge")


def test_cancelled_term_computation_keeps_answers_right(shared):
    """Scans cancelled while they compute distance terms in the shared copy
    leave lists half-written but unmarked: later scans (in other sessions
    too) recompute them and answer exactly."""
    make_table(shared, "shared_cancel", 20000, 64, 2048, 32)
    try:
        s = session(probes=2048, rerank=100000, table_cache_mb=256)
        try:
            # Publish the copy first, with one cheap scan: on a loaded machine
            # every timed scan below may be cancelled before it gets that far.
            s.execute("SET ivfpq.probes = 1")
            nearest(s, "shared_cancel", 8)
            s.execute("SET ivfpq.probes = 2048")
            cancelled = 0
            for timeout_ms in (5, 10, 20, 40, 80, 160, 320):
                s.execute(f"SET statement_timeout = '{timeout_ms}ms'")
                try:
                    nearest(s, "shared_cancel", 8)
                except psycopg.errors.QueryCanceled:
                    cancelled += 1
                s.execute("RESET statement_timeout")
            assert cancelled >= 2, "too few scans were cancelled while computing terms"
        finally:
            s.close()
        entry = shared.execute(ENTRY, ("shared_cancel_idx",)).fetchone()
        assert entry is not None and entry[1] == 0
        t = session(probes=2048, rerank=100000, table_cache_mb=256)
        try:
            assert nearest(t, "shared_cancel", 8, 50) == exact(t, "shared_cancel", 8, 50)
        finally:
            t.close()
        assert shared.execute(ENTRY, ("shared_cancel_idx",)).fetchone()[4] == 2048
    finally:
        shared.execute("DROP TABLE shared_cancel")


def test_concurrent_sessions_under_eviction_and_reindex(shared, many):
    """Four sessions query the five indexes in turn (more than the cache holds,
    so entries are evicted and published all the time) while a fifth
    re-indexes them: every answer equals the exact one, and no pin is left."""
    import random
    import threading

    expected = {}
    with session() as c:
        for name in many:
            expected[name] = {q: exact(c, name, q) for q in (3, 77, 1500)}
    errors = []
    stop = threading.Event()

    def reader(seed):
        rnd = random.Random(seed)
        try:
            with session(probes=512, rerank=3000, table_cache_mb=64) as c:
                for _ in range(25):
                    name = rnd.choice(many)
                    q = rnd.choice((3, 77, 1500))
                    got = nearest(c, name, q)
                    if got != expected[name][q]:
                        errors.append((name, q, got, expected[name][q]))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    def reindexer():
        try:
            with psycopg.connect(autocommit=True) as c:
                while not stop.is_set():
                    c.execute(f"REINDEX INDEX {random.choice(many)}_idx")
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    readers = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    rebuild = threading.Thread(target=reindexer)
    for t in readers + [rebuild]:
        t.start()
    for t in readers:
        t.join(timeout=600)
    stop.set()
    rebuild.join(timeout=600)
    assert errors == []
    assert shared.execute("SELECT coalesce(sum(pins), 0) FROM ivfpq_shared_cache()").fetchone()[0] == 0
    used, capacity = shared.execute("SELECT used_bytes, capacity_bytes FROM ivfpq_shared_cache_stats()").fetchone()
    assert used <= capacity
