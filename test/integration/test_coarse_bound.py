"""List assignment and probe choice through the coarse bound (src/core/coarse_bound.cpp).

A session prepares the bound of a large quantizer (here 256 lists of 1024
dimensions) after 512 inserts or scans, as a memory context named
"ivfpq coarse bound" shows; from then on neither inserts nor scans read every
centroid.  The answers must not change:

- a row inserted through the bound is in its nearest list: a search for its
  own vector that probes one list finds it;
- a search through the bound returns exactly what the same search returns in
  a fresh session that reads every centroid (same lists probed), also when
  the scan goes on past its first lists (a filter that drops most rows);
- with the shared quantizer cache the first session to prepare the bound
  publishes it next to the shared entry, and the others take it from there
  instead of preparing their own.
These sessions keep their own quantizers (ivfpq.shared_cache = off) except in
the last test.
"""
import numpy as np
import psycopg
import pytest

DIM = 1024
LISTS = 256
ROWS = 4000
WARMUP = 520     # more than the 512 uses after which the bound is prepared


def vec(x):
    return "[" + ",".join(f"{v:.6f}" for v in x) + "]"


def structured(rng, n, basis):
    """Rows near a 48-dimensional subspace, in clusters."""
    centres = rng.standard_normal((64, basis.shape[0])) * 3
    latent = centres[rng.integers(0, 64, n)] + rng.standard_normal((n, basis.shape[0]))
    return (latent @ basis + 0.05 * rng.standard_normal((n, DIM))).astype(np.float32)


def bound_contexts(conn):
    return conn.execute("SELECT count(*) FROM pg_backend_memory_contexts "
                        "WHERE name = 'ivfpq coarse bound'").fetchone()[0]


@pytest.fixture
def big(conn):
    rng = np.random.default_rng(5)
    basis = np.linalg.qr(rng.standard_normal((DIM, 48)))[0].T
    rows = structured(rng, ROWS, basis)
    conn.execute("DROP TABLE IF EXISTS bound_t")
    conn.execute(f"CREATE TABLE bound_t (id int PRIMARY KEY, e vector({DIM})) WITH (autovacuum_enabled = off)")
    with conn.cursor().copy("COPY bound_t (id, e) FROM STDIN") as copy:
        for i, r in enumerate(rows):
            copy.write_row((i, vec(r)))
    conn.execute(f"CREATE INDEX bound_idx ON bound_t USING ivfpq (e) WITH (lists = {LISTS}, m = 128)")
    conn.execute("ANALYZE bound_t")
    yield conn, rng, basis
    conn.execute("DROP TABLE IF EXISTS bound_t")


def search(conn, q, limit=10, where=""):
    return [r[0] for r in conn.execute(
        f"SELECT id FROM bound_t {where} ORDER BY e <-> %s::vector LIMIT {limit}", (vec(q),))]


def index_session(shared=False):
    c = psycopg.connect(autocommit=True)
    c.execute("SET enable_seqscan = off")
    if not shared:
        c.execute("SET ivfpq.shared_cache = off")
    return c


def shared_entry_bytes(conn):
    return conn.execute(
        "SELECT bytes FROM ivfpq_shared_cache() WHERE index = 'bound_idx'::regclass "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())").fetchone()[0]


def test_inserts_through_the_bound_land_in_their_nearest_list(big):
    conn, rng, basis = big
    new_rows = structured(rng, WARMUP + 200, basis)
    with index_session() as c:
        assert bound_contexts(c) == 0
        for i, r in enumerate(new_rows):
            c.execute("INSERT INTO bound_t VALUES (%s, %s::vector)", (100_000 + i, vec(r)))
        assert bound_contexts(c) == 1, "the session did not prepare the coarse bound"
        c.execute("SET ivfpq.probes = 1")
        c.execute("SET ivfpq.rerank = 1000")
        for i in range(WARMUP, len(new_rows)):
            assert 100_000 + i in search(c, new_rows[i], limit=5), f"row {100_000 + i} is not in its nearest list"
        assert bound_contexts(c) == 1, "the bound was dropped as useless on structured data"
    assert conn.execute("SELECT * FROM ivfpq_verify('bound_idx', true)").fetchall() == []


def test_searches_through_the_bound_return_what_a_full_scan_returns(big):
    conn, rng, basis = big
    queries = structured(rng, WARMUP + 60, basis)
    with index_session() as through_bound, index_session() as fresh:
        for c in (through_bound, fresh):
            c.execute("SET ivfpq.probes = 4")
        for q in queries[:WARMUP]:
            search(through_bound, q)
        assert bound_contexts(through_bound) == 1
        for q in queries[WARMUP:]:
            assert search(through_bound, q) == search(fresh, q)
            # A filter that keeps one row in 50: the scan probes past its first lists.
            where = "WHERE id %% 50 = 7"
            assert search(through_bound, q, 10, where) == search(fresh, q, 10, where)
        assert bound_contexts(fresh) == 0


def test_the_bound_is_shared_with_the_shared_cache(big):
    conn, rng, basis = big
    new_rows = structured(rng, WARMUP, basis)
    queries = structured(rng, WARMUP + 40, basis)
    # floats of the bound: (2 x dim + lists) x 64 (ivfpq_core.h)
    bound_bytes = 4 * (2 * DIM + LISTS) * 64
    with index_session(shared=True) as inserter, index_session(shared=True) as searcher, \
            index_session() as fresh:
        inserter.execute("INSERT INTO bound_t VALUES (%s, %s::vector)", (200_000, vec(new_rows[0])))
        before = shared_entry_bytes(conn)
        for i, r in enumerate(new_rows[1:]):
            inserter.execute("INSERT INTO bound_t VALUES (%s, %s::vector)", (200_001 + i, vec(r)))
        assert bound_contexts(inserter) == 0, "the bound stayed private"
        published = shared_entry_bytes(conn)
        assert published - before >= bound_bytes * 0.9, (before, published)

        for c in (searcher, fresh):
            c.execute("SET ivfpq.probes = 4")
        for q in queries[:WARMUP]:
            search(searcher, q)
        assert bound_contexts(searcher) == 0, "the searcher prepared a bound of its own"
        assert shared_entry_bytes(conn) == published
        for q in queries[WARMUP:]:
            assert search(searcher, q) == search(fresh, q)
