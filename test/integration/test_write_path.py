"""Bad input on the index write path (aminsert), and rows that never commit.

- A vector of the wrong dimensions is refused with SQLSTATE 22000
  (data_exception) and a message naming both dimensions, whether the check
  is the column's typmod or the index's own (an untyped `vector` column);
  the same for an UPDATE.  NaN and infinities are refused by the vector type
  itself with 22003 (numeric_value_out_of_range).
- NULL vectors, and zero vectors under vector_cosine_ops, are stored in the
  table but not indexed: an index scan over every list never returns them.
- Rows of a statement that failed half-way (multi-row VALUES, INSERT ...
  SELECT, COPY), of a rolled-back transaction, or of a rolled-back savepoint
  may leave entries in the index until VACUUM, but an index scan over every
  list never returns them: not before VACUUM, not after it, and not after new
  rows have taken their heap slots.  Rows committed around them are found.

"Searched through the index" below always means: enable_seqscan off,
ivfpq.probes = lists, ivfpq.rerank at its maximum, ORDER BY the operator with
a LIMIT above the table size, with EXPLAIN showing the ivfpq index scan; such
a scan returns every indexed live row exactly once.
"""
import io

import numpy as np
import psycopg
import pytest

DIM = 16
LISTS = 16
ROWS = 3000
FAR = 50.0          # the rows that must never come back live around here
BIG_LIMIT = 1000000

# ids of the failed / rolled-back rows: far above the committed ones
DOOMED_BASE = 100000


def vec(values):
    return "[" + ",".join(repr(float(x)) for x in values) + "]"


def far_point(rng, spread=1.0):
    return FAR + rng.random(DIM) * spread


# A fresh random vector per row (the WHERE makes the subquery correlated).
RANDOM_ROW = "ARRAY(SELECT random() FROM generate_series(1, %d) d WHERE {i} > 0)::vector" % DIM
FAR_ROW = ("ARRAY(SELECT %s + random() FROM generate_series(1, %d) d WHERE {i} > 0)::vector"
           % (FAR, DIM))


def sqlstate_of(excinfo):
    return excinfo.value.diag.sqlstate


def insert_far(conn, table, first, count):
    conn.execute(f"INSERT INTO {table} SELECT i, {FAR_ROW.format(i='i')} "
                 f"FROM generate_series({first}, {first + count - 1}) i")
    return set(range(first, first + count))


def vectors_of(conn, table, ids):
    return {r[0]: np.array(r[1].strip("[]").split(","), dtype=float)
            for r in conn.execute(f"SELECT id, e::text FROM {table} WHERE id = ANY(%s)", (sorted(ids),))}


def vacuum_and_reinsert(t, expected, doomed, queries):
    """The checks after the doomed rows: before VACUUM (already done by the
    caller), after it, and after 3000 new rows have taken their heap slots.
    Returns the new expected set."""
    c = t.conn
    # a committed row after the doomed ones keeps VACUUM from truncating
    # their heap pages, so the new rows can take their slots
    expected = expected | insert_far(c, t.name, 400001, 1)
    t.check(expected, doomed, queries)
    c.execute(f"VACUUM {t.name}")
    t.check(expected, doomed, queries)
    assert c.execute(f"SELECT rows FROM ivfpq_index_stats('{t.index}')").fetchone()[0] == len(expected)

    new = insert_far(c, t.name, 500001, 3000)
    reused = c.execute(f"SELECT count(*) FROM {t.name} WHERE id > 500000 AND ctid < "
                       f"(SELECT ctid FROM {t.name} WHERE id = 400001)").fetchone()[0]
    assert reused > 1000, "the new rows did not reuse the doomed rows' heap slots"
    expected = expected | new
    t.check(expected, doomed, queries)
    sample = sorted(new)[::150]
    for i, v in vectors_of(c, t.name, sample).items():
        assert t.nearest(v) == i
    return expected


class Table:
    """A table with an ivfpq index on it, and the checks of the module."""

    def __init__(self, conn, name, opclass="vector_l2_ops", typed=True, rows=ROWS,
                 index_options=None):
        self.conn = conn
        self.name = name
        self.index = name + "_idx"
        self.op = {"vector_l2_ops": "<->", "vector_ip_ops": "<#>", "vector_cosine_ops": "<=>"}[opclass]
        conn.execute(f"DROP TABLE IF EXISTS {name}")
        column = f"vector({DIM})" if typed else "vector"
        conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, e {column})")
        if rows:
            conn.execute("SELECT setseed(0.42)")
            conn.execute(f"INSERT INTO {name} SELECT i, {RANDOM_ROW.format(i='i')} "
                         f"FROM generate_series(1, {rows}) i")
        with_ = index_options or f"lists = {LISTS}, m = 4"
        conn.execute(f"CREATE INDEX {self.index} ON {name} USING ivfpq (e {opclass}) WITH ({with_})")
        self.lists = conn.execute(f"SELECT lists FROM ivfpq_index_stats('{self.index}')").fetchone()[0]

    def drop(self):
        self.conn.execute(f"DROP TABLE IF EXISTS {self.name}")

    def count(self, where="true"):
        return self.conn.execute(f"SELECT count(*) FROM {self.name} WHERE {where}").fetchone()[0]

    def ids(self, where="true"):
        return {r[0] for r in self.conn.execute(f"SELECT id FROM {self.name} WHERE {where}")}

    def indexable_ids(self):
        """Live rows the index must hold: non-NULL, and of non-zero norm under cosine."""
        where = "e IS NOT NULL"
        if self.op == "<=>":
            where += " AND vector_norm(e) > 0"
        return self.ids(where)

    def search(self, query, limit=BIG_LIMIT):
        """ids in the order an all-lists index scan returns them for query."""
        c = self.conn
        c.execute("SET enable_seqscan = off")
        c.execute("SET enable_bitmapscan = off")
        c.execute(f"SET ivfpq.probes = {self.lists}")
        c.execute("SET ivfpq.rerank = 100000")
        try:
            sql = f"SELECT id FROM {self.name} ORDER BY e {self.op} '{vec(query)}' LIMIT {limit}"
            plan = "\n".join(r[0] for r in c.execute("EXPLAIN (COSTS OFF) " + sql))
            assert f"Index Scan using {self.index} on {self.name}" in plan, plan
            return [r[0] for r in c.execute(sql)]
        finally:
            c.execute("RESET enable_seqscan")
            c.execute("RESET enable_bitmapscan")
            c.execute("RESET ivfpq.probes")
            c.execute("RESET ivfpq.rerank")

    def check(self, expected, forbidden, queries):
        """The heap holds exactly `expected` among the indexable rows, and
        every all-lists index search returns each of them once and nothing
        of `forbidden`."""
        expected = set(expected)
        forbidden = set(forbidden)
        assert not expected & forbidden
        heap = self.indexable_ids()
        assert heap == expected, (
            f"table: missing {sorted(expected - heap)[:10]}, unexpected {sorted(heap - expected)[:10]}")
        for query in queries:
            got = self.search(query)
            assert len(got) == len(set(got)), "the index scan returned a row twice"
            returned_forbidden = set(got) & forbidden
            assert not returned_forbidden, (
                f"the index returned rows that never committed or are not indexable: "
                f"{sorted(returned_forbidden)[:10]}")
            assert set(got) == expected, (
                f"index scan missed {sorted(expected - set(got))[:10]}, "
                f"returned unexpected {sorted(set(got) - expected)[:10]}")

    def nearest(self, query):
        got = self.search(query, limit=1)
        return got[0] if got else None


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


@pytest.fixture
def trained(conn):
    """vector(16) column, index trained on 3000 random rows."""
    t = Table(conn, "wp_trained")
    yield t
    t.drop()


@pytest.fixture
def untyped(conn):
    """Untyped `vector` column, index trained on 3000 rows of 16 dimensions:
    the dimensions are checked by the index itself (ivfpqinsert)."""
    t = Table(conn, "wp_untyped", typed=False)
    yield t
    t.drop()


@pytest.fixture
def empty(conn):
    """vector(16) column, index built on the empty table (untrained)."""
    t = Table(conn, "wp_empty", rows=0, index_options="lists = 4")
    yield t
    t.drop()


@pytest.fixture
def inherited(conn):
    """Untyped column of an empty table whose index copies a trained index's
    codebooks (codebooks_from): trained for 16 dimensions from its first row."""
    source = Table(conn, "wp_source", typed=False)
    t = Table(conn, "wp_inherited", typed=False, rows=0, index_options=f"codebooks_from = '{source.index}'")
    yield t
    t.drop()
    source.drop()


@pytest.fixture(params=["trained", "untyped", "empty", "inherited"])
def any_table(request):
    return request.getfixturevalue(request.param)


# ---------------------------------------------------------------- dimensions

@pytest.mark.parametrize("wrong_dim", [8, DIM + 1, 1])
def test_insert_wrong_dimensions(any_table, rng, wrong_dim):
    t = any_table
    before = t.indexable_ids()
    bad = vec(rng.random(wrong_dim))
    with pytest.raises(psycopg.errors.DataException) as excinfo:
        t.conn.execute(f"INSERT INTO {t.name} VALUES (999999, '{bad}')")
    assert sqlstate_of(excinfo) == "22000"
    assert excinfo.value.diag.message_primary == f"expected {DIM} dimensions, not {wrong_dim}"
    if t.name in ("wp_untyped", "wp_inherited"):
        # the index's own check: it names the index
        assert excinfo.value.diag.message_detail == f'Index "{t.index}" was built for {DIM} dimensions.'
    assert t.count("id = 999999") == 0

    # a good row afterwards goes in and is found through the index
    good = rng.random(DIM)
    t.conn.execute(f"INSERT INTO {t.name} VALUES (999998, '{vec(good)}')")
    assert t.nearest(good) == 999998
    t.check(before | {999998}, {999999}, [good, rng.random(DIM)])


def test_empty_untyped_index_refuses_a_second_dimension(conn, rng):
    """An index built on an empty table with an untyped `vector` column has
    no dimensions until rows arrive.  Once it holds rows of 16 dimensions, a
    row of 8 is as wrong as for any other ivfpq index: the build refuses such
    a table ("All vectors in an ivfpq index must have the same dimensions"),
    so the insert path must refuse the row too, and REINDEX (which the
    untrained index's NOTICE asks for) keeps working."""
    t = Table(conn, "wp_untyped_empty", typed=False, rows=0, index_options="lists = 4")
    try:
        rows = {i: rng.random(DIM) for i in range(1, 51)}
        conn.execute(f"INSERT INTO {t.name} VALUES " + ", ".join(f"({i}, '{vec(v)}')" for i, v in rows.items()))
        for i in (1, 25, 50):
            assert t.nearest(rows[i]) == i

        with pytest.raises(psycopg.errors.DataException) as excinfo:
            conn.execute(f"INSERT INTO {t.name} VALUES (999999, '{vec(rng.random(DIM // 2))}')")
        assert sqlstate_of(excinfo) == "22000"
        assert excinfo.value.diag.message_primary == f"expected {DIM} dimensions, not {DIM // 2}"
        assert t.count("id = 999999") == 0

        conn.execute(f"REINDEX INDEX {t.index}")
        t.lists = conn.execute(f"SELECT lists FROM ivfpq_index_stats('{t.index}')").fetchone()[0]
        t.check(set(rows), {999999}, [rng.random(DIM)])
    finally:
        t.drop()


@pytest.mark.parametrize("wrong_dim", [8, DIM + 1])
def test_update_wrong_dimensions(any_table, rng, wrong_dim):
    t = any_table
    c = t.conn
    if t.count() == 0:
        c.execute(f"INSERT INTO {t.name} SELECT i, {RANDOM_ROW.format(i='i')} FROM generate_series(1, 200) i")
    old = vectors_of(c, t.name, {5, 150})
    before = t.indexable_ids()
    bad = vec(rng.random(wrong_dim))

    # one row
    with pytest.raises(psycopg.errors.DataException) as excinfo:
        c.execute(f"UPDATE {t.name} SET e = '{bad}' WHERE id = 5")
    assert sqlstate_of(excinfo) == "22000"
    assert excinfo.value.diag.message_primary == f"expected {DIM} dimensions, not {wrong_dim}"

    # many rows, the bad one in the middle: the rows updated before it moved
    # to the far cluster in the index, then the statement failed
    # (an untyped CASE: a vector(16) column checks its typmod row by row)
    with pytest.raises(psycopg.errors.DataException) as excinfo:
        c.execute(f"UPDATE {t.name} SET e = CASE WHEN id = 150 THEN '{bad}'::vector "
                  f"ELSE {FAR_ROW.format(i='id')} END WHERE id <= 200")
    assert sqlstate_of(excinfo) == "22000"
    assert excinfo.value.diag.message_primary == f"expected {DIM} dimensions, not {wrong_dim}"
    entries = c.execute(f"SELECT rows FROM ivfpq_index_stats('{t.index}')").fetchone()[0]
    assert entries >= len(before) + 149, "the failed UPDATE left no entry in the index"

    # nothing changed: the old vectors are found, the far versions never
    far = far_point(rng)
    got = t.search(far, limit=20)
    far_rows = c.execute(
        f"SELECT count(*) FROM {t.name} WHERE id = ANY(%s) AND e <-> '{vec(far)}' < {FAR}",
        (got,)).fetchone()[0]
    assert far_rows == 0, "an index scan returned an UPDATE that failed"
    for i, v in old.items():
        assert t.nearest(v) == i
    t.check(before, set(), [far, rng.random(DIM)])
    c.execute(f"VACUUM {t.name}")
    t.check(before, set(), [far])

    # and the session is usable: a good UPDATE moves the row
    new = far_point(rng)
    c.execute(f"UPDATE {t.name} SET e = '{vec(new)}' WHERE id = 5")
    assert t.nearest(new) == 5
    assert t.nearest(old[5]) != 5
    t.check(before, set(), [new])


# ---------------------------------------------------------------- NaN, infinity

BAD_VALUES = [
    ("'[1,NaN,3]'::vector", "NaN not allowed in vector"),
    ("'[nan]'::vector", "NaN not allowed in vector"),
    ("'[1,Infinity,3]'::vector", "infinite value not allowed in vector"),
    ("'[-inf,2]'::vector", "infinite value not allowed in vector"),
    ("ARRAY[1, 'NaN', 3]::float4[]::vector", "NaN not allowed in vector"),
    ("ARRAY[1, 'Infinity']::float8[]::vector", "infinite value not allowed in vector"),
    ("ARRAY[1, '-Infinity']::float4[]::vector", "infinite value not allowed in vector"),
    ("ARRAY[1, 'NaN']::numeric[]::vector", "NaN not allowed in vector"),
]


@pytest.mark.parametrize("expression, message", BAD_VALUES)
def test_nan_and_infinity_rejected_by_the_type(conn, expression, message):
    with pytest.raises(psycopg.errors.NumericValueOutOfRange) as excinfo:
        conn.execute(f"SELECT {expression}")
    assert sqlstate_of(excinfo) == "22003"
    assert excinfo.value.diag.message_primary == message


def test_nan_and_infinity_never_reach_the_index(trained, rng):
    t = trained
    before = t.indexable_ids()
    row = list(rng.random(DIM))
    for bad, message in (("NaN", "NaN not allowed in vector"),
                         ("Infinity", "infinite value not allowed in vector"),
                         ("-Infinity", "infinite value not allowed in vector")):
        text = "[" + ",".join(str(x) for x in row[:7] + [bad] + row[8:]) + "]"
        with pytest.raises(psycopg.errors.NumericValueOutOfRange) as excinfo:
            t.conn.execute(f"INSERT INTO {t.name} VALUES (999999, '{text}')")
        assert sqlstate_of(excinfo) == "22003"
        assert excinfo.value.diag.message_primary == message
        # as a parameter (text), through the input function at execution time
        with pytest.raises(psycopg.errors.NumericValueOutOfRange):
            t.conn.execute(f"INSERT INTO {t.name} VALUES (999999, %s::vector)", (text,))
        # overflow to infinity in arithmetic is refused too
        with pytest.raises(psycopg.errors.NumericValueOutOfRange) as excinfo:
            t.conn.execute(f"UPDATE {t.name} SET e = e * '{vec([1e38] * DIM)}' * '{vec([1e38] * DIM)}' "
                           "WHERE id BETWEEN 1 AND 100")
        assert sqlstate_of(excinfo) == "22003"
        assert excinfo.value.diag.message_primary == "value out of range: overflow"
    t.check(before, {999999}, [rng.random(DIM)])
    assert t.nearest(vectors_of(t.conn, t.name, {1})[1]) == 1


# ---------------------------------------------------------------- not indexed

@pytest.mark.parametrize("kind", ["trained", "empty"])
def test_null_vector_stored_but_not_indexed(request, rng, kind):
    t = request.getfixturevalue(kind)
    c = t.conn
    if t.count() == 0:
        c.execute(f"INSERT INTO {t.name} SELECT i, {RANDOM_ROW.format(i='i')} FROM generate_series(1, 300) i")
    c.execute(f"INSERT INTO {t.name} VALUES (900001, NULL), (900002, NULL)")
    c.execute(f"INSERT INTO {t.name} SELECT i, NULL FROM generate_series(900003, 900100) i")
    # an indexed row set to NULL leaves the index too
    c.execute(f"UPDATE {t.name} SET e = NULL WHERE id IN (7, 8)")
    nulls = set(range(900001, 900101)) | {7, 8}
    assert t.ids("e IS NULL") == nulls, "the NULL rows are in the table"
    expected = t.ids() - nulls
    queries = [rng.random(DIM), far_point(rng), -rng.random(DIM)]
    t.check(expected, nulls, queries)
    # with a small LIMIT too (the iterative scan ends without them)
    assert not set(t.search(queries[0], limit=10)) & nulls
    c.execute(f"VACUUM {t.name}")
    t.check(expected, nulls, queries)
    stats_rows = c.execute(f"SELECT rows FROM ivfpq_index_stats('{t.index}')").fetchone()[0]
    assert stats_rows == len(expected)
    # a NULL row given a vector later is indexed from then on
    v = far_point(rng)
    c.execute(f"UPDATE {t.name} SET e = '{vec(v)}' WHERE id = 900050")
    assert t.nearest(v) == 900050
    t.check(expected | {900050}, nulls - {900050}, queries)


@pytest.fixture(params=["trained", "empty"])
def cosine(conn, request):
    if request.param == "trained":
        t = Table(conn, "wp_cosine", opclass="vector_cosine_ops")
    else:
        t = Table(conn, "wp_cosine_empty", opclass="vector_cosine_ops", rows=0, index_options="lists = 4")
        conn.execute(f"INSERT INTO {t.name} SELECT i, {RANDOM_ROW.format(i='i')} FROM generate_series(1, 300) i")
    yield t
    t.drop()


def test_cosine_zero_vector_stored_but_not_indexed(cosine, rng):
    t = cosine
    c = t.conn
    zero = vec([0.0] * DIM)
    c.execute(f"INSERT INTO {t.name} VALUES (900001, '{zero}')")
    c.execute(f"INSERT INTO {t.name} VALUES (900002, '[{','.join(['-0'] * DIM)}]')")
    c.execute(f"INSERT INTO {t.name} SELECT i, '{zero}' FROM generate_series(900003, 900050) i")
    c.execute(f"UPDATE {t.name} SET e = '{zero}' WHERE id = 3")
    zeros = set(range(900001, 900051)) | {3}
    assert t.ids("vector_norm(e) = 0") == zeros, "the zero rows are in the table"
    expected = t.ids() - zeros
    queries = [rng.random(DIM), -rng.random(DIM), rng.random(DIM) - 0.5]
    t.check(expected, zeros, queries)
    c.execute(f"VACUUM {t.name}")
    t.check(expected, zeros, queries)
    # a scaled copy of a row is at cosine distance 0: found, and the zero rows still not
    v = rng.random(DIM)
    c.execute(f"INSERT INTO {t.name} VALUES (900100, '{vec(v * 1000)}')")
    assert t.nearest(v) == 900100
    t.check(expected | {900100}, zeros, queries)


# ---------------------------------------------------------------- failed statements

def doomed_insert(t, kind, first, count, bad_at):
    """One statement inserting rows first..first+count-1 (all in the far
    cluster) that fails at row first+bad_at; returns the exception."""
    c = t.conn
    untyped = t.name in ("wp_untyped", "wp_inherited")
    bad_id = first + bad_at
    if kind == "values-dimensions":
        # literal rows; only an untyped column lets the short one reach the index
        assert untyped
        rng = np.random.default_rng(first)
        rows = []
        for i in range(first, first + count):
            v = rng.random(DIM // 2 if i == bad_id else DIM) + (0 if i == bad_id else FAR)
            rows.append(f"({i}, '{vec(v)}')")
        sql = f"INSERT INTO {t.name} VALUES " + ", ".join(rows)
    elif kind in ("select-dimensions", "select-nan"):
        bad = (f"ARRAY(SELECT random() FROM generate_series(1, {DIM // 2}))::float4[]"
               if kind == "select-dimensions" else
               f"array_fill('NaN'::float4, ARRAY[{DIM}])")
        sql = (f"INSERT INTO {t.name} SELECT i, CASE WHEN i = {bad_id} THEN {bad} "
               f"ELSE ARRAY(SELECT {FAR} + random() FROM generate_series(1, {DIM}) d WHERE i > 0)::float4[] "
               f"END::vector FROM generate_series({first}, {first + count - 1}) i")
    elif kind in ("copy-dimensions", "copy-nan"):
        rng = np.random.default_rng(first)
        buf = io.StringIO()
        for i in range(first, first + count):
            if i == bad_id:
                text = vec(rng.random(DIM // 2)) if kind == "copy-dimensions" else \
                    "[" + ",".join(["1"] * (DIM - 1) + ["NaN"]) + "]"
            else:
                text = vec(rng.random(DIM) + FAR)
            buf.write(f"{i}\t{text}\n")
        with pytest.raises(psycopg.Error) as excinfo:
            with c.cursor().copy(f"COPY {t.name} (id, e) FROM STDIN") as copy:
                copy.write(buf.getvalue())
        return excinfo.value
    else:
        raise AssertionError(kind)
    with pytest.raises(psycopg.Error) as excinfo:
        c.execute(sql)
    return excinfo.value


FAILURES = [
    # (fixture, kind, sqlstate, message)
    ("untyped", "values-dimensions", "22000", f"expected {DIM} dimensions, not {DIM // 2}"),
    ("inherited", "values-dimensions", "22000", f"expected {DIM} dimensions, not {DIM // 2}"),
    ("untyped", "select-dimensions", "22000", f"expected {DIM} dimensions, not {DIM // 2}"),
    ("trained", "select-dimensions", "22000", f"expected {DIM} dimensions, not {DIM // 2}"),
    ("trained", "select-nan", "22003", "NaN not allowed in vector"),
    ("empty", "select-nan", "22003", "NaN not allowed in vector"),
    ("trained", "copy-dimensions", "22000", f"expected {DIM} dimensions, not {DIM // 2}"),
    ("untyped", "copy-dimensions", "22000", f"expected {DIM} dimensions, not {DIM // 2}"),
    ("trained", "copy-nan", "22003", "NaN not allowed in vector"),
]


@pytest.mark.parametrize("fixture, kind, sqlstate, message", FAILURES,
                         ids=[f"{f}-{k}" for f, k, _, _ in FAILURES])
def test_failed_multirow_insert_never_returned(request, rng, fixture, kind, sqlstate, message):
    t = request.getfixturevalue(fixture)
    c = t.conn
    committed = t.indexable_ids()
    doomed = set()
    # Three failed statements: the bad row early, in the middle, late.  COPY
    # flushes its rows to the heap and the indexes every 1000 rows, so 2500
    # rows with the bad one late have put >= 2000 entries in the index.
    for n, (count, bad_at) in enumerate([(40, 1), (600, 300), (2500, 2400)]):
        first = DOOMED_BASE + n * 10000
        err = doomed_insert(t, kind, first, count, bad_at)
        assert err.diag.sqlstate == sqlstate, f"{kind}: {err.diag.sqlstate} {err}"
        assert err.diag.message_primary == message
        doomed |= set(range(first, first + count))
    assert t.count(f"id >= {DOOMED_BASE}") == 0

    # the failed statements did reach the index (or the test proves nothing)
    entries = c.execute(f"SELECT rows FROM ivfpq_index_stats('{t.index}')").fetchone()[0]
    assert entries > len(committed), (
        f"the failed statements left no entry in the index ({entries} entries, "
        f"{len(committed)} committed rows)")

    far = far_point(rng)
    queries = [far, far_point(rng, 0.1), rng.random(DIM)]
    t.check(committed, doomed, queries)
    assert t.nearest(far) not in doomed

    vacuum_and_reinsert(t, committed, doomed, queries)


# ---------------------------------------------------------------- transactions

@pytest.mark.parametrize("fixture", ["trained", "untyped", "empty"])
def test_rolled_back_transaction_never_returned(request, rng, fixture):
    t = request.getfixturevalue(fixture)
    c = t.conn
    committed = t.indexable_ids()
    doomed = set()

    # a plain ROLLBACK of good rows; seen by its own transaction before that
    c.execute("BEGIN")
    doomed |= insert_far(c, t.name, DOOMED_BASE, 500)
    doomed |= insert_far(c, t.name, DOOMED_BASE + 1000, 1500)
    inside = set(t.search(far_point(rng)))
    assert set(range(DOOMED_BASE, DOOMED_BASE + 500)) <= inside, "own uncommitted rows are visible to the scan"
    c.execute("ROLLBACK")

    # a transaction aborted by an error after good rows, then rolled back
    c.execute("BEGIN")
    doomed |= insert_far(c, t.name, DOOMED_BASE + 5000, 700)
    with pytest.raises(psycopg.errors.DataException) as excinfo:
        c.execute(f"INSERT INTO {t.name} VALUES (999999, '{vec(rng.random(3))}')")
    assert sqlstate_of(excinfo) == "22000"
    with pytest.raises(psycopg.errors.InFailedSqlTransaction):
        c.execute("SELECT 1")
    c.execute("ROLLBACK")
    doomed.add(999999)

    # DELETE of committed rows rolled back: they stay
    c.execute("BEGIN")
    c.execute(f"DELETE FROM {t.name} WHERE id % 10 = 0")
    c.execute("ROLLBACK")

    entries = c.execute(f"SELECT rows FROM ivfpq_index_stats('{t.index}')").fetchone()[0]
    assert entries >= len(committed) + 2700, "the rolled-back rows left no entry in the index"
    queries = [far_point(rng), far_point(rng, 0.1), rng.random(DIM)]
    t.check(committed, doomed, queries)
    vacuum_and_reinsert(t, committed, doomed, queries)


@pytest.mark.parametrize("fixture", ["trained", "untyped", "empty"])
def test_savepoint_rolled_back_outer_commits(request, rng, fixture):
    t = request.getfixturevalue(fixture)
    c = t.conn
    committed = t.indexable_ids()

    c.execute("BEGIN")
    before_sp = insert_far(c, t.name, 200001, 400)
    c.execute("SAVEPOINT s1")
    doomed = insert_far(c, t.name, DOOMED_BASE, 800)
    c.execute("SAVEPOINT s2")
    doomed |= insert_far(c, t.name, DOOMED_BASE + 1000, 300)
    c.execute("RELEASE SAVEPOINT s2")
    c.execute("ROLLBACK TO SAVEPOINT s1")
    # a failure inside a second savepoint, rolled back too
    c.execute("SAVEPOINT s3")
    doomed |= insert_far(c, t.name, DOOMED_BASE + 5000, 200)
    with pytest.raises(psycopg.errors.DataException) as excinfo:
        c.execute(f"INSERT INTO {t.name} SELECT i, CASE WHEN i = {DOOMED_BASE + 6100} "
                  f"THEN ARRAY[1, 2, 3]::float4[] ELSE ARRAY(SELECT {FAR} + random() "
                  f"FROM generate_series(1, {DIM}) d WHERE i > 0)::float4[] END::vector "
                  f"FROM generate_series({DOOMED_BASE + 6000}, {DOOMED_BASE + 6199}) i")
    assert sqlstate_of(excinfo) == "22000"
    doomed |= set(range(DOOMED_BASE + 6000, DOOMED_BASE + 6200))
    c.execute("ROLLBACK TO SAVEPOINT s3")
    # a PL/pgSQL exception block is a subtransaction as well
    c.execute(f"""DO $$ BEGIN
        INSERT INTO {t.name} SELECT i, {FAR_ROW.format(i='i')} FROM generate_series({DOOMED_BASE + 7000}, {DOOMED_BASE + 7299}) i;
        INSERT INTO {t.name} VALUES ({DOOMED_BASE + 7300}, '[1,2,3]');
    EXCEPTION WHEN data_exception THEN NULL;
    END $$""")
    doomed |= set(range(DOOMED_BASE + 7000, DOOMED_BASE + 7301))
    after_sp = insert_far(c, t.name, 300001, 400)
    c.execute("COMMIT")

    expected = committed | before_sp | after_sp
    entries = c.execute(f"SELECT rows FROM ivfpq_index_stats('{t.index}')").fetchone()[0]
    assert entries >= len(expected) + 1500, "the rolled-back rows left no entry in the index"
    queries = [far_point(rng), far_point(rng, 0.1), rng.random(DIM)]
    t.check(expected, doomed, queries)
    for i, v in vectors_of(c, t.name, {200001, 200200, 200400, 300001, 300200, 300400}).items():
        assert t.nearest(v) == i
    vacuum_and_reinsert(t, expected, doomed, queries)
