"""ALTER EXTENSION ivfpq UPDATE from the first released version (0.1, kept
as released in sql/upgrade/) to the current one.

An upgraded database must end up with exactly the objects, opclass members
and comments of a fresh install, and an index built under 0.1 must keep
answering queries after the update.
"""
import psycopg

from conftest import scratch_databases
import pytest

# Everything a database learns from the extension script, one string each.
CATALOG_QUERY = """
SELECT 'member ' || pg_describe_object(classid, objid, 0)
FROM pg_depend
WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
  AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ivfpq')
UNION ALL
SELECT 'function ' || p.oid::regprocedure || ' returns ' || pg_get_function_result(p.oid)
       || ' ' || p.provolatile::text || p.proparallel::text || p.proisstrict::text || ' ' || coalesce(p.prosrc, '')
       || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '')
FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
WHERE d.deptype = 'e' AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ivfpq')
UNION ALL
SELECT 'amproc ' || pg_describe_object('pg_amproc'::regclass, p.oid, 0)
FROM pg_amproc p JOIN pg_opfamily f ON f.oid = p.amprocfamily
WHERE f.opfmethod = (SELECT oid FROM pg_am WHERE amname = 'ivfpq')
UNION ALL
SELECT 'amop ' || pg_describe_object('pg_amop'::regclass, o.oid, 0)
FROM pg_amop o JOIN pg_opfamily f ON f.oid = o.amopfamily
WHERE f.opfmethod = (SELECT oid FROM pg_am WHERE amname = 'ivfpq')
UNION ALL
SELECT 'depends ' || pg_describe_object(classid, objid, 0) || ' on '
       || pg_describe_object(refclassid, refobjid, 0) || ' ' || deptype::text
FROM pg_depend WHERE classid = 'pg_amproc'::regclass
  AND objid IN (SELECT p.oid FROM pg_amproc p JOIN pg_opfamily f ON f.oid = p.amprocfamily
                WHERE f.opfmethod = (SELECT oid FROM pg_am WHERE amname = 'ivfpq'))
ORDER BY 1
"""


@pytest.fixture
def databases(conn):
    """Two scratch databases: one for the upgrade, one for a fresh install."""
    yield from scratch_databases(conn, "ivfpq_upgrade_old", "ivfpq_upgrade_new")


def connect(dbname):
    return psycopg.connect(dbname=dbname, autocommit=True)


def test_update_from_0_1(databases):
    old_db, new_db = databases
    with connect(old_db) as old, connect(new_db) as new:
        default = old.execute(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'ivfpq'").fetchone()[0]
        assert default != "0.1"

        old.execute("CREATE EXTENSION ivfpq VERSION '0.1'")
        assert old.execute("SELECT extversion FROM pg_extension WHERE extname = 'ivfpq'").fetchone()[0] == "0.1"
        # 0.1 declared support function 1 in every opclass.
        assert old.execute(
            "SELECT count(*) FROM pg_amproc p JOIN pg_opfamily f ON f.oid = p.amprocfamily "
            "WHERE f.opfmethod = (SELECT oid FROM pg_am WHERE amname = 'ivfpq') AND p.amprocnum = 1"
        ).fetchone()[0] == 3
        old.execute("CREATE TABLE items (id int, e vector(8))")
        old.execute(
            "INSERT INTO items SELECT i, ARRAY(SELECT sin(i * 0.37 + d * 1.3 + (i % 17) * d)::real FROM generate_series(1, 8) d)::vector "
            "FROM generate_series(1, 3000) i")
        old.execute("CREATE INDEX items_idx ON items USING ivfpq (e) WITH (lists = 8, m = 4)")
        old.execute("CREATE INDEX items_cos_idx ON items USING ivfpq (e vector_cosine_ops) WITH (lists = 8, m = 4)")

        old.execute("ALTER EXTENSION ivfpq UPDATE")
        assert old.execute("SELECT extversion FROM pg_extension WHERE extname = 'ivfpq'").fetchone()[0] == default
        new.execute("CREATE EXTENSION ivfpq")

        old_catalog = [r[0] for r in old.execute(CATALOG_QUERY).fetchall()]
        new_catalog = [r[0] for r in new.execute(CATALOG_QUERY).fetchall()]
        missing = sorted(set(new_catalog) - set(old_catalog))
        extra = sorted(set(old_catalog) - set(new_catalog))
        assert (missing, extra) == ([], []), "upgraded catalog differs from a fresh install"
        assert len(old_catalog) > 50

        for db in (old, new):
            invalid = db.execute(
                "SELECT opcname FROM pg_opclass WHERE opcmethod = (SELECT oid FROM pg_am WHERE amname = 'ivfpq') "
                "AND NOT amvalidate(oid)").fetchall()
            assert invalid == []

        # The index built under 0.1 still answers, with every list probed
        # exactly as a sequential scan does.
        old.execute("SET ivfpq.probes = 8")
        old.execute("SET enable_seqscan = off")
        query = "SELECT id FROM items ORDER BY e <-> (SELECT e FROM items WHERE id = 42) LIMIT 10"
        plan = "\n".join(r[0] for r in old.execute("EXPLAIN " + query).fetchall())
        assert "items_idx" in plan
        by_index = [r[0] for r in old.execute(query).fetchall()]
        old.execute("SET enable_indexscan = off")
        old.execute("SET enable_seqscan = on")
        exact = [r[0] for r in old.execute(query).fetchall()]
        assert by_index == exact
        stats = old.execute("SELECT trained, inherited FROM ivfpq_index_stats('items_idx')").fetchone()
        assert stats == (True, False)


@pytest.fixture
def databases_0_2(conn):
    yield from scratch_databases(conn, "ivfpq_upgrade2_old", "ivfpq_upgrade2_new")


def test_update_from_0_2(databases_0_2):
    """0.2 -> current: the catalog matches a fresh install, and an index built and
    grown under 0.2 is vacuumed, verified and described by the new version."""
    old_db, new_db = databases_0_2
    with connect(old_db) as old, connect(new_db) as new:
        old.execute("CREATE EXTENSION ivfpq VERSION '0.2'")
        old.execute("CREATE TABLE items (id int, e vector(8))")
        old.execute(
            "INSERT INTO items SELECT i, ARRAY(SELECT sin(i * 0.37 + d * 1.3 + (i % 17) * d)::real FROM generate_series(1, 8) d)::vector "
            "FROM generate_series(1, 3000) i")
        old.execute("CREATE INDEX items_idx ON items USING ivfpq (e) WITH (lists = 8, m = 4)")
        old.execute(
            "INSERT INTO items SELECT i, ARRAY(SELECT cos(i * 0.11 + d)::real FROM generate_series(1, 8) d)::vector "
            "FROM generate_series(3001, 4000) i")
        # 0.2's ivfpq_index_stats has 15 columns and reads the same library.
        cur = old.execute("SELECT * FROM ivfpq_index_stats('items_idx')")
        assert len(cur.description) == 15 and cur.fetchone()[1] == 4000
        assert old.execute("SELECT to_regprocedure('ivfpq_verify(regclass,boolean)')").fetchone()[0] is None

        old.execute("ALTER EXTENSION ivfpq UPDATE")
        default = old.execute(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'ivfpq'").fetchone()[0]
        assert old.execute("SELECT extversion FROM pg_extension WHERE extname = 'ivfpq'").fetchone()[0] == default
        new.execute("CREATE EXTENSION ivfpq")
        old_catalog = [r[0] for r in old.execute(CATALOG_QUERY).fetchall()]
        new_catalog = [r[0] for r in new.execute(CATALOG_QUERY).fetchall()]
        assert (sorted(set(new_catalog) - set(old_catalog)), sorted(set(old_catalog) - set(new_catalog))) == ([], [])

        assert old.execute("SELECT * FROM ivfpq_verify('items_idx', true)").fetchall() == []
        old.execute("DELETE FROM items WHERE id % 2 = 0")
        old.execute("VACUUM items")
        assert old.execute("SELECT * FROM ivfpq_verify('items_idx', true)").fetchall() == []
        cur = old.execute("SELECT rows, free_pages, list_pages_max FROM ivfpq_index_stats('items_idx')")
        rows, free_pages, list_pages_max = cur.fetchone()
        assert rows == 2000 and free_pages >= 0 and list_pages_max >= 1
        old.execute("SET ivfpq.probes = 8")
        old.execute("SET enable_seqscan = off")
        query = "SELECT id FROM items ORDER BY e <-> (SELECT e FROM items WHERE id = 41) LIMIT 10"
        by_index = [r[0] for r in old.execute(query).fetchall()]
        old.execute("SET enable_indexscan = off")
        old.execute("SET enable_seqscan = on")
        assert by_index == [r[0] for r in old.execute(query).fetchall()]


@pytest.fixture
def databases_0_3(conn):
    yield from scratch_databases(conn, "ivfpq_upgrade3_old", "ivfpq_upgrade3_new")


def test_update_from_0_3(databases_0_3):
    """0.3 -> current: 0.4 adds the operator classes of filter columns.  An
    index built under 0.3 keeps answering; after the update a multicolumn
    index (e, category) can be built and filters in its scan."""
    old_db, new_db = databases_0_3
    with connect(old_db) as old, connect(new_db) as new:
        old.execute("CREATE EXTENSION ivfpq VERSION '0.3'")
        old.execute("CREATE TABLE items (id int, category int, e vector(8))")
        old.execute(
            "INSERT INTO items SELECT i, i % 20, ARRAY(SELECT sin(i * 0.37 + d * 1.3 + (i % 17) * d)::real "
            "FROM generate_series(1, 8) d)::vector FROM generate_series(1, 4000) i")
        old.execute("CREATE INDEX items_idx ON items USING ivfpq (e) WITH (lists = 8, m = 4)")
        old.execute("CREATE TABLE events (at timestamptz NOT NULL, category int, e vector(4)) PARTITION BY RANGE (at)")
        old.execute("SELECT * FROM ivfpq_manage('events', 'at', premake => 0, inherit_codebooks => false, "
                    "now => '2026-11-20 10:00+00')")
        # 0.3 has no operator class for an integer column.
        with pytest.raises(psycopg.errors.UndefinedObject):
            old.execute("CREATE INDEX ON items USING ivfpq (e, category)")

        old.execute("ALTER EXTENSION ivfpq UPDATE")
        default = old.execute(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'ivfpq'").fetchone()[0]
        assert default not in ("0.3", "0.2", "0.1")
        assert old.execute("SELECT extversion FROM pg_extension WHERE extname = 'ivfpq'").fetchone()[0] == default
        new.execute("CREATE EXTENSION ivfpq")
        old_catalog = [r[0] for r in old.execute(CATALOG_QUERY).fetchall()]
        new_catalog = [r[0] for r in new.execute(CATALOG_QUERY).fetchall()]
        assert (sorted(set(new_catalog) - set(old_catalog)), sorted(set(old_catalog) - set(new_catalog))) == ([], [])
        assert any("int4_ops" in line for line in old_catalog)
        assert old.execute(
            "SELECT count(*) FROM pg_opclass WHERE opcmethod = (SELECT oid FROM pg_am WHERE amname = 'ivfpq') "
            "AND NOT amvalidate(oid)").fetchone()[0] == 0

        assert old.execute("SELECT * FROM ivfpq_verify('items_idx', true)").fetchall() == []
        old.execute("SET ivfpq.probes = 8")
        old.execute("SET ivfpq.rerank = 10000")
        old.execute("SET enable_seqscan = off")
        query = ("SELECT id FROM items WHERE category = 3 "
                 "ORDER BY e <-> (SELECT e FROM items WHERE id = 41) LIMIT 10")
        by_old_index = [r[0] for r in old.execute(query).fetchall()]
        old.execute("CREATE INDEX items_multi_idx ON items USING ivfpq (e, category) WITH (lists = 8, m = 4)")
        old.execute("DROP INDEX items_idx")
        plan = "\n".join(r[0] for r in old.execute("EXPLAIN (COSTS OFF) " + query).fetchall())
        assert "items_multi_idx" in plan and "Index Cond: (category = 3)" in plan, plan
        by_new_index = [r[0] for r in old.execute(query).fetchall()]
        old.execute("SET enable_indexscan = off")
        old.execute("SET enable_seqscan = on")
        exact = [r[0] for r in old.execute(query).fetchall()]
        assert by_old_index == exact and by_new_index == exact

        # A table managed under 0.3 has no filter columns and rotates as before; managed
        # again with some, its new partitions' indexes carry them.
        assert old.execute("SELECT filter_columns FROM ivfpq_partitioned_tables").fetchall() == [(None,)]
        old.execute("SELECT * FROM ivfpq_rotate('events', '2026-11-21 10:00+00')")
        indexdef = "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %s::regclass"
        assert old.execute(indexdef, ("events_p20261121",)).fetchone()[0].endswith("USING ivfpq (e)")
        old.execute("SELECT * FROM ivfpq_manage('events', 'at', premake => 1, inherit_codebooks => false, "
                    "filter_columns => '{category}', now => '2026-11-21 10:00+00')")
        assert old.execute(indexdef, ("events_p20261122",)).fetchone()[0].endswith("USING ivfpq (e, category)")


@pytest.fixture
def databases_0_4(conn):
    yield from scratch_databases(conn, "ivfpq_upgrade4_old", "ivfpq_upgrade4_new")


def test_update_from_0_4(databases_0_4):
    """0.4 -> current: 0.5 adds the functions that show the shared quantizer
    cache.  An index built under 0.4 keeps answering, through the shared cache,
    which the new functions then show."""
    old_db, new_db = databases_0_4
    with connect(old_db) as old, connect(new_db) as new:
        old.execute("CREATE EXTENSION ivfpq VERSION '0.4'")
        assert old.execute("SELECT to_regproc('ivfpq_shared_cache')").fetchone()[0] is None
        old.execute("CREATE TABLE items (id int, category int, e vector(8))")
        old.execute(
            "INSERT INTO items SELECT i, i % 20, ARRAY(SELECT sin(i * 0.37 + d * 1.3 + (i % 17) * d)::real "
            "FROM generate_series(1, 8) d)::vector FROM generate_series(1, 4000) i")
        old.execute("CREATE INDEX items_idx ON items USING ivfpq (e, category) WITH (lists = 8, m = 4)")

        old.execute("ALTER EXTENSION ivfpq UPDATE")
        default = old.execute(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'ivfpq'").fetchone()[0]
        assert default == "0.5"
        assert old.execute("SELECT extversion FROM pg_extension WHERE extname = 'ivfpq'").fetchone()[0] == default
        new.execute("CREATE EXTENSION ivfpq")
        old_catalog = [r[0] for r in old.execute(CATALOG_QUERY).fetchall()]
        new_catalog = [r[0] for r in new.execute(CATALOG_QUERY).fetchall()]
        assert (sorted(set(new_catalog) - set(old_catalog)), sorted(set(old_catalog) - set(new_catalog))) == ([], [])
        assert any("ivfpq_shared_cache_stats()" in line for line in old_catalog)

        old.execute("SET ivfpq.probes = 8")
        old.execute("SET ivfpq.rerank = 10000")
        old.execute("SET enable_seqscan = off")
        query = ("SELECT id FROM items WHERE category = 3 "
                 "ORDER BY e <-> (SELECT e FROM items WHERE id = 41) LIMIT 10")
        by_index = [r[0] for r in old.execute(query).fetchall()]
        entries = old.execute(
            "SELECT count(*) FROM ivfpq_shared_cache() WHERE index = 'items_idx'::regclass "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())").fetchone()[0]
        preloaded = "ivfpq" in old.execute("SHOW shared_preload_libraries").fetchone()[0]
        assert entries == (1 if preloaded else 0)
        assert len(old.execute("SELECT * FROM ivfpq_shared_cache_stats()").fetchall()) == (1 if preloaded else 0)
        old.execute("SET enable_indexscan = off")
        old.execute("SET enable_seqscan = on")
        assert by_index == [r[0] for r in old.execute(query).fetchall()]
