"""Concurrent inserts into one list (src/ivfpq_insert.cpp, side pages).

Sessions that keep finding a list's tail page locked link pages of their own
into the list (right after its first page) and insert there.  With four
sessions inserting rows that all belong to one list:

- every row is found by a search of every list, exactly once, and
  ivfpq_verify(..., true) is clean (it also checks that every page in a
  list's chain is stamped with that list);
- the hot list has more than one page with room (the sessions' side pages
  next to the tail): the pages are read with pageinspect's get_raw_page;
- after deleting a tenth of the rows, VACUUM fills those pages again: every
  page of the list but its last is at least seven eighths full.
"""
import struct
import threading

import psycopg
import pytest

DIM = 16
LISTS = 4
BASE_ROWS = 4000
CLIENTS = 4
BATCHES = 60
BATCH = 25
BIG_LIMIT = 1_000_000

PAGE_LIST = 4
BLCKSZ = 8192


def hot_row_sql(first, count):
    """count rows near (40, 40, ...): all in one list."""
    return (f"INSERT INTO hot (id, e) SELECT i, ARRAY(SELECT 40 + random() * 0.5 "
            f"FROM generate_series(1, {DIM}) d WHERE i > 0)::vector "
            f"FROM generate_series({first}, {first + count - 1}) i")


def list_pages(conn):
    """(list, entry_count, next_block, block) of every list page, from the raw pages."""
    blocks = conn.execute("SELECT pg_relation_size('hot_idx') / current_setting('block_size')::int").fetchone()[0]
    pages = []
    for block in range(blocks):
        raw = conn.execute("SELECT get_raw_page('hot_idx', %s)", (block,)).fetchone()[0]
        special = raw[BLCKSZ - 16:]
        next_block, count, page_type, _inserted, _page_id, list_plus_one = struct.unpack("<IHHHHI", special)
        if page_type == PAGE_LIST:
            pages.append((list_plus_one - 1, count, next_block, block))
    return pages


def capacity(conn):
    """Entries a list page holds: the fullest page of a freshly built list."""
    return max(count for _, count, _, _ in list_pages(conn))


@pytest.fixture
def hot(conn):
    conn.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
    conn.execute("DROP TABLE IF EXISTS hot")
    conn.execute(f"CREATE TABLE hot (id bigint PRIMARY KEY, e vector({DIM})) WITH (autovacuum_enabled = off)")
    # Four clusters, one per list.
    conn.execute(f"INSERT INTO hot (id, e) SELECT i, ARRAY(SELECT (i % {LISTS}) * 10 + random() "
                 f"FROM generate_series(1, {DIM}) d)::vector FROM generate_series(1, {BASE_ROWS}) i")
    conn.execute(f"CREATE INDEX hot_idx ON hot USING ivfpq (e) WITH (lists = {LISTS}, m = 4)")
    yield conn
    conn.execute("DROP TABLE IF EXISTS hot")


def insert_concurrently(round_=0):
    """CLIENTS sessions insert BATCHES batches each into the hot list at once
    (ids of round_ n are offset by n x 100000)."""
    errors = []
    start = threading.Barrier(CLIENTS)

    def client(n):
        try:
            with psycopg.connect(autocommit=True) as c:
                start.wait()
                for b in range(BATCHES):
                    c.execute(hot_row_sql(1_000_000 * (n + 1) + 100_000 * round_ + b * BATCH, BATCH))
        except Exception as e:      # reported by the test below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def all_ids_through_index(conn):
    conn.execute("SET enable_seqscan = off")
    conn.execute(f"SET ivfpq.probes = {LISTS}")
    conn.execute("SET ivfpq.rerank = 10000")
    plan = "\n".join(r[0] for r in conn.execute(
        f"EXPLAIN SELECT id FROM hot ORDER BY e <-> %s::vector LIMIT {BIG_LIMIT}", ("[" + ",".join(["40"] * DIM) + "]",)))
    assert "hot_idx" in plan
    ids = [r[0] for r in conn.execute(
        f"SELECT id FROM hot ORDER BY e <-> %s::vector LIMIT {BIG_LIMIT}", ("[" + ",".join(["40"] * DIM) + "]",))]
    for setting in ("enable_seqscan", "ivfpq.probes", "ivfpq.rerank"):
        conn.execute(f"RESET {setting}")
    return ids


def test_concurrent_inserts_into_one_list(hot):
    conn = hot
    cap = capacity(conn)
    # Side pages need sessions to find the tail locked: on a busy 2-core machine the
    # sessions may run one after another for a whole round, so up to three rounds are
    # run until they contend; without side pages only the tail ever has room, so the
    # assertion below fails however many rounds run.
    for round_ in range(3):
        errors = insert_concurrently(round_)
        assert errors == []
        pages = list_pages(conn)
        hot_list = max(range(LISTS), key=lambda l: sum(c for lst, c, _, _ in pages if lst == l))
        if len([p for p in pages if p[0] == hot_list and p[1] < cap]) >= 2:
            break

    expected = {r[0] for r in conn.execute("SELECT id FROM hot")}
    ids = all_ids_through_index(conn)
    assert len(ids) == len(set(ids)), "a row came back twice"
    assert set(ids) == expected
    assert conn.execute("SELECT * FROM ivfpq_verify('hot_idx', true)").fetchall() == []

    pages = list_pages(conn)
    hot_list = max(range(LISTS), key=lambda l: sum(c for lst, c, _, _ in pages if lst == l))
    hot_pages = [p for p in pages if p[0] == hot_list]
    with_room = [p for p in hot_pages if p[1] < cap]
    assert sum(p[1] for p in hot_pages) >= CLIENTS * BATCHES * BATCH
    # The tail, plus the side pages the sessions left partly filled.
    assert len(with_room) >= 2, f"pages with room in the hot list: {with_room} (capacity {cap})"

    # VACUUM (it runs the list pass when there are dead rows) fills them again.
    conn.execute("DELETE FROM hot WHERE id % 10 = 0")
    conn.execute("VACUUM hot")
    assert conn.execute("SELECT * FROM ivfpq_verify('hot_idx', true)").fetchall() == []
    chain = {p[3]: p for p in list_pages(conn) if p[0] == hot_list}
    targets = {p[2] for p in chain.values()}
    first = [b for b in chain if b not in targets]
    assert len(first) == 1
    order = []
    block = first[0]
    while block in chain:
        order.append(chain[block])
        block = chain[block][2]
    assert len(order) == len(chain), "the chain does not reach every page of the list"
    for page in order[:-1]:
        assert page[1] >= cap - cap // 8, f"page {page[3]} holds {page[1]} of {cap} after VACUUM"
    expected = {r[0] for r in conn.execute("SELECT id FROM hot")}
    ids = all_ids_through_index(conn)
    assert len(ids) == len(set(ids)) and set(ids) == expected
