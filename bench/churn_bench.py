#!/usr/bin/python3
"""Live data under churn (issue 8): what an ivfpq index costs a table whose rows keep
arriving and going, measured side by side in one run on the generated 768-dim set.

Parts (numbered as in the report; run in the order 1, 3, 2):
  1. insert throughput: rows/s with 1 and 4 concurrent clients (--clients), each
     a separate process with its own connection sending batches of --batch rows
     (binary COPY, or multi-row INSERT with --method insert), autocommit per
     batch, at full speed, into
       (a) a table without a vector index,
       (b) the table of --rows rows with a trained ivfpq index built first,
     and with --pgvector PATH (a built and installed pgvector checkout), in a
     database of its own (pgvector's extension is also called `vector` and
     defines its own type `vector`):
       (c) the same with a pgvector ivfflat index, (d) with a pgvector hnsw index,
       each against pgvector's own no-index table (its vectors are TOASTed).
     Each indexed measurement is paired with a no-index one on the same side,
     alternating ABBA over --rounds runs, and the report gives the ratio
     indexed / no-index (issue 8's target for ivfpq: >= 0.5), batch latency,
     WAL bytes and index bytes per inserted row;
  2. VACUUM after deleting a random --delete-fraction (20%) of a --vacuum-rows
     table with a fresh ivfpq index: DELETE and VACUUM times (VACUUM's phases
     from pg_stat_progress_vacuum, its VERBOSE report), index / heap sizes
     before the delete, after VACUUM and after re-inserting as many rows (the
     deleted vectors under new ids: space reuse), ivfpq_index_stats at each
     point (every column it returns), and recall@10 before and after;
  3. searches per second (ORDER BY embedding <-> $1 LIMIT 10, prepared, binary
     vector parameter) on a fresh ivfpq index over the --rows table: alone,
     then while --insert-clients other clients insert at full speed, then alone
     again; recall@10 of every search against exact ground truth over the rows
     committed before the search was sent (see the report for the definition).

Inserted rows get ids from --rows up; their vectors come from the --pool
dataset rows after the base rows, cycled (recall is counted by distance, so a
repeated vector is not a miss). Autovacuum is off on the measured tables so
that it does not run at random inside a timed window.

    bash bench/churn.sh                                          # full size (see bench/README.md)
    bash bench/churn.sh --rows 20000 --vacuum-rows 20000 --seconds 5   # smoke run

Connection: --dsn, or the libpq environment (PGHOST, PGPORT, ...); normally
started by bench/churn.sh, which provides a throwaway cluster.
"""

import argparse
import hashlib
import multiprocessing
import os
import subprocess
import sys
import threading
import time

import numpy as np
import psycopg
from psycopg import conninfo
from psycopg.types.numeric import Int4

import datasets
import ivfpq_bench
import pgclient
from ivfpq_bench import K, fmt, int_list, log, mib
from partitions_bench import default_lists

TABLE = "items"
NOINDEX = "items_noindex"
IVFPQ_INDEX = "items_embedding_ivfpq"
PARTS = ("insert", "vacuum", "search")
TARGET_RATIO = 0.5
# Squared-L2 slack when a found row is compared with the k-th true distance:
# the server ranks in float32, the truth here is float64.
DIST_EPS = 1e-6


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", nargs="?", default="generated", choices=["generated"],
                    help="the generated 768-dim set (datasets.py); only it is supported")
    ap.add_argument("--rows", type=int, default=1_000_000,
                    help="rows loaded before the timed inserts and searches (parts 1 and 3; default %(default)s)")
    ap.add_argument("--vacuum-rows", type=int, default=1_000_000,
                    help="rows of the table of the VACUUM part (default %(default)s)")
    ap.add_argument("--delete-fraction", type=float, default=0.2,
                    help="fraction of the rows deleted before VACUUM, chosen at random (default %(default)s)")
    ap.add_argument("--seconds", type=float, default=60,
                    help="timed inserts per configuration and client count, split into --rounds runs; "
                    "also the length of each phase of the search part (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="runs per configuration and client count, alternating no-index / indexed "
                    "ABBA (default %(default)s)")
    ap.add_argument("--clients", type=int_list, default=[1, 4],
                    help="concurrent insert clients of part 1 (default 1,4)")
    ap.add_argument("--insert-clients", type=int, default=1,
                    help="insert clients running during the searches of part 3 (default %(default)s)")
    ap.add_argument("--batch", type=int, default=100, help="rows per statement (default %(default)s)")
    ap.add_argument("--method", choices=("copy", "insert"), default="copy",
                    help="binary COPY of each batch, or one multi-row INSERT with binary parameters "
                    "(default %(default)s)")
    ap.add_argument("--pool", type=int, default=100_000,
                    help="dataset rows after the base rows that inserted rows take their vectors from, "
                    "cycled (default %(default)s)")
    ap.add_argument("--lists", type=int, help="ivfpq lists (default: the index's own, rows / 1000)")
    ap.add_argument("--m", type=int, help="ivfpq m (default: the index's own, dimensions / 8)")
    ap.add_argument("--index-options", default="", help="extra ivfpq WITH (...) options")
    ap.add_argument("--probes", type=int, default=32, help="ivfpq.probes of the searches (default %(default)s)")
    ap.add_argument("--rerank", type=int, default=100, help="ivfpq.rerank of the searches (default %(default)s)")
    ap.add_argument("--nqueries", type=int, default=1000,
                    help="distinct query vectors, cycled by the searches (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed queries before the searches (default %(default)s)")
    ap.add_argument("--pgvector", metavar="PATH",
                    help="a pgvector checkout, built and installed (make && make install): adds ivfflat and "
                    "hnsw to part 1, in a database of their own")
    ap.add_argument("--pgvector-rows", type=int,
                    help="rows loaded on the pgvector side before its indexes are built (default: --rows)")
    ap.add_argument("--pgvector-db", default="churn_pgvector",
                    help="database created (dropped first, and at the end) for pgvector (default %(default)s)")
    ap.add_argument("--ivfflat-lists", type=int, help="ivfflat lists (default: the ivfpq index's lists)")
    ap.add_argument("--hnsw-options", default="m = 16, ef_construction = 64",
                    help="hnsw WITH (...) options (default: pgvector's defaults, %(default)s)")
    ap.add_argument("--parts", default=",".join(PARTS),
                    help="comma-separated parts to run: insert, vacuum, search (default all)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the rows deleted in part 2 (default %(default)s)")
    ap.add_argument("--dsn", default="", help="libpq connection string (default: libpq environment)")
    ap.add_argument("--maintenance-work-mem", default="2GB", help="for CREATE INDEX (default %(default)s)")
    ap.add_argument("--results", help="output path (.md and .json written next to each other); "
                    "default bench/results/churn-generated-<rows>-vac<vacuum-rows>-<date>")
    args = ap.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    for p in args.parts:
        if p not in PARTS:
            ap.error(f"--parts: unknown part {p!r} (expected {', '.join(PARTS)})")
    args.pgvector_rows = args.pgvector_rows or args.rows
    if min(args.rows, args.vacuum_rows, args.pgvector_rows, args.batch, args.rounds, args.insert_clients) < 1 \
            or not args.clients or min(args.clients) < 1:
        ap.error("--rows, --vacuum-rows, --pgvector-rows, --batch, --rounds and the client counts must be positive")
    if args.pool < args.batch:
        ap.error("--pool must hold at least one batch")
    if not 0 < args.delete_fraction < 1:
        ap.error("--delete-fraction must be between 0 and 1")
    if args.pgvector and not os.path.isfile(os.path.join(args.pgvector, "vector.control")):
        ap.error(f"--pgvector {args.pgvector}: no vector.control there (not a pgvector checkout)")
    return args


# --------------------------------------------------------------------------
# Tables, sizes, indexes
# --------------------------------------------------------------------------

def autovacuum_off(conn, table):
    conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)")


def load_base(conn, base, log_prefix="pg"):
    """(Re)create items with the base rows (binary COPY, primary key, VACUUM ANALYZE) and
    items_noindex, an empty table LIKE it (same columns, storage, primary key) without a
    vector index; autovacuum off on both. Returns the load time."""
    log(f"{log_prefix}: loading {base.shape[0]} rows into {TABLE} (binary COPY)")
    load_s = pgclient.load_table(conn, base, TABLE, log=log)
    autovacuum_off(conn, TABLE)
    conn.execute(f"DROP TABLE IF EXISTS {NOINDEX}")
    conn.execute(f"CREATE TABLE {NOINDEX} (LIKE {TABLE} INCLUDING ALL)")
    autovacuum_off(conn, NOINDEX)
    log(f"{log_prefix}: loaded in {load_s:.1f} s")
    return load_s


def restore_base(conn, n_base):
    """Remove the rows inserted after the base rows (ids >= n_base) and VACUUM: the
    heap is truncated back to the loaded pages."""
    t0 = time.perf_counter()
    deleted = conn.execute(f"DELETE FROM {TABLE} WHERE id >= %s", (n_base,)).rowcount
    conn.execute(f"VACUUM {TABLE}")
    conn.execute(f"TRUNCATE {NOINDEX}")
    return deleted, time.perf_counter() - t0


def sizes(conn, table, index=None):
    """Heap (main fork), table (heap + TOAST + maps), all indexes and one index, in bytes."""
    heap, tbl, idx = conn.execute("SELECT pg_relation_size(%s::regclass), pg_table_size(%s::regclass), "
                                  "pg_indexes_size(%s::regclass)", (table, table, table)).fetchone()
    out = {"heap_bytes": heap, "table_bytes": tbl, "indexes_bytes": idx}
    if index:
        out["index_bytes"] = conn.execute("SELECT pg_relation_size(%s::regclass)", (index,)).fetchone()[0]
    return out


def count_rows(conn, table):
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def create_pgvector_index(conn, sql, index, maintenance_work_mem):
    """CREATE INDEX (pgvector) after a CHECKPOINT; return its build figures."""
    conn.execute(f"DROP INDEX IF EXISTS {index}")
    conn.execute(f"SET maintenance_work_mem = '{maintenance_work_mem}'")
    conn.execute("CHECKPOINT")
    log(f"pgvector: {sql}  -- maintenance_work_mem = {maintenance_work_mem}")
    secs, notices = ivfpq_bench.timed_with_notices(conn, sql, "pgvector", index)
    size = conn.execute("SELECT pg_relation_size(%s::regclass)", (index,)).fetchone()[0]
    log(f"pgvector: CREATE INDEX {index} {secs:.1f} s, {mib(size)}")
    return {"index": index, "sql": sql, "build_s": secs, "index_bytes": size, "notices": notices}


def create_ivfpq_index(conn, args):
    secs, size, stats, sql = ivfpq_bench.create_index(
        conn, "l2", ivfpq_bench.index_options(args.lists, args.m, args.index_options),
        args.maintenance_work_mem, TABLE, IVFPQ_INDEX)
    log(f"pg: CREATE INDEX {IVFPQ_INDEX} {secs:.1f} s, {mib(size)}")
    return {"index": IVFPQ_INDEX, "sql": sql, "build_s": secs, "index_bytes": size, "stats": stats}


# --------------------------------------------------------------------------
# Insert clients (one process and one connection each)
# --------------------------------------------------------------------------

def insert_sql(table, n):
    return f"INSERT INTO {table} (id, embedding) VALUES " + ", ".join(["(%s, %b)"] * n)


def write_batch(conn, table, ids, vectors, method):
    """One autocommitted statement: binary COPY of the rows, or one multi-row INSERT."""
    if method == "copy":
        payload = pgclient.COPY_SIGNATURE + pgclient.copy_rows(ids, vectors) + pgclient.COPY_TRAILER
        with conn.cursor() as cur:
            with cur.copy(f"COPY {table} (id, embedding) FROM STDIN (FORMAT binary)") as copy:
                copy.write(payload)
    else:
        params = []
        for i, v in zip(ids, vectors):
            params += [Int4(int(i)), pgclient.Vector(v)]
        conn.execute(insert_sql(table, len(ids)), params, prepare=True)


def pool_vectors(ids, n_base, pool):
    """The vectors of inserted rows: row id n_base + i has pool[i % len(pool)]."""
    return np.asarray(pool[(np.asarray(ids) - n_base) % pool.shape[0]], dtype=np.float32)


def _insert_client(dsn, table, method, batch, n_base, pool, counter, barrier, stop, queue, number):
    """Body of one insert process: a warm-up batch (untimed), then batches until stop.
    Each batch takes the next `batch` ids from the shared counter. Puts (number, records,
    error) on the queue; a record is (first id, rows, sent, acknowledged, warm-up)."""
    records = []
    try:
        conn = psycopg.connect(dsn, autocommit=True)
        if method == "insert":
            pgclient.register_vector(conn)

        def one(warm):
            with counter.get_lock():
                first = counter.value
                counter.value += batch
            ids = np.arange(first, first + batch)
            vectors = pool_vectors(ids, n_base, pool)
            t0 = time.perf_counter()
            write_batch(conn, table, ids, vectors, method)
            records.append((first, batch, t0, time.perf_counter(), warm))

        one(True)
        barrier.wait()
        while not stop.is_set():
            one(False)
        conn.close()
        queue.put((number, records, None))
    except BaseException as e:  # noqa: BLE001 -- reported to the parent, which raises
        barrier.abort()
        queue.put((number, records, f"{type(e).__name__}: {e}"))


def run_inserts(dsn, table, clients, n_base, pool, args, seconds=None, during=None):
    """Fork `clients` insert processes; once each has done its warm-up batch, run for
    `seconds`, or for as long as during() takes (it runs here, e.g. searches). Returns
    the timed figures, every batch (for visibility), the next free id and during's result."""
    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value("q", n_base if args.next_id.get(dsn + table) is None else args.next_id[dsn + table])
    barrier = ctx.Barrier(clients + 1)
    stop = ctx.Event()
    queue = ctx.Queue()
    procs = [ctx.Process(target=_insert_client, daemon=True,
                         args=(dsn, table, args.method, args.batch, n_base, pool, counter, barrier, stop, queue, c))
             for c in range(clients)]
    for p in procs:
        p.start()
    outs, extra = [], None
    try:
        try:
            barrier.wait(timeout=600)
        except threading.BrokenBarrierError:
            pass  # a client failed: its error is on the queue
        else:
            t0 = time.perf_counter()
            if during is not None:
                extra = during()
            else:
                time.sleep(seconds)
        stop.set()
        for _ in procs:
            outs.append(queue.get(timeout=600))
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.terminate()
    errors = [f"client {n}: {e}" for n, _, e in outs if e]
    if errors or len(outs) < clients:
        raise RuntimeError(f"insert into {table} failed: " + "; ".join(errors or ["a client did not report"]))
    records = sorted((r for _, recs, _ in outs for r in recs), key=lambda r: r[3])
    args.next_id[dsn + table] = counter.value
    timed = [r for r in records if not r[4]]
    rows = sum(r[1] for r in timed)
    elapsed = (max(r[3] for r in timed) - t0) if timed else 0.0
    lat = np.array([r[3] - r[2] for r in timed]) * 1000 if timed else np.array([0.0])
    return {"clients": clients, "rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed if elapsed else 0.0,
            "batches": len(timed), "batch_p50_ms": float(np.percentile(lat, 50)),
            "batch_p99_ms": float(np.percentile(lat, 99)),
            "warmup_rows": sum(r[1] for r in records if r[4]), "t0": t0,
            "batch_records": {"first": np.array([r[0] for r in records], dtype=np.int64),
                              "n": np.array([r[1] for r in records], dtype=np.int64),
                              "t_ack": np.array([r[3] for r in records])},
            "during": extra}


def public(run):
    """A run without its per-batch records and clock origin (for the JSON)."""
    return {k: v for k, v in run.items() if k not in ("batch_records", "t0", "during")}


# --------------------------------------------------------------------------
# Part 1: insert throughput
# --------------------------------------------------------------------------

# Size of a relation and the WAL insert position, in bytes.
WAL_AND_SIZE = ("SELECT pg_relation_size(%s::regclass), "
                "pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint")


def insert_runs(side, conn, dsn, config, index, n_base, pool, args):
    """Timed inserts with each client count: the indexed table against the no-index table,
    alternating ABBA over args.rounds runs. Returns one row per run."""
    runs = []
    per_run = args.seconds / args.rounds
    for clients in args.clients:
        for r in range(args.rounds):
            order = [("none", NOINDEX), (config, TABLE)]
            if r % 2:
                order.reverse()
            for name, table in order:
                if table == NOINDEX:
                    conn.execute(f"TRUNCATE {NOINDEX}")
                    args.next_id.pop(dsn + NOINDEX, None)
                conn.execute("CHECKPOINT")
                rel = index if table == TABLE else table
                before, wal_before = conn.execute(WAL_AND_SIZE, (rel,)).fetchone()
                run = run_inserts(dsn, table, clients, n_base, pool, args, seconds=per_run)
                after, wal_after = conn.execute(WAL_AND_SIZE, (rel,)).fetchone()
                inserted = run["rows"] + run["warmup_rows"]
                row = {"side": side, "config": name, "paired_with": config, "table": table, "round": r,
                       **public(run), "growth_relation": rel,
                       "growth_bytes_per_row": (after - before) / inserted if inserted else None,
                       "wal_bytes_per_row": (wal_after - wal_before) / inserted if inserted else None}
                runs.append(row)
                log(f"insert {side:>8} {name:>6}: {clients} client(s), run {r + 1}/{args.rounds}: "
                    f"{run['rows']} rows in {run['seconds']:.1f} s = {run['rows_per_s']:.0f} rows/s "
                    f"(batch p50 {run['batch_p50_ms']:.1f} ms, p99 {run['batch_p99_ms']:.1f} ms)")
    return runs


def insert_summary(runs):
    """Per (side, index, clients): rows/s of the indexed runs and of the no-index runs paired
    with them (rows over seconds, summed over the runs), and the ratio."""
    keys = []
    for r in runs:
        key = (r["side"], r["paired_with"], r["clients"])
        if key not in keys:
            keys.append(key)
    out = []
    for side, config, clients in keys:
        mine = [r for r in runs if (r["side"], r["paired_with"], r["clients"]) == (side, config, clients)]
        idx = [r for r in mine if r["config"] == config]
        none = [r for r in mine if r["config"] == "none"]

        def rate(rs):
            secs = sum(r["seconds"] for r in rs)
            return sum(r["rows"] for r in rs) / secs if secs else None
        a, b = rate(idx), rate(none)
        growth = [r["growth_bytes_per_row"] for r in idx if r["growth_bytes_per_row"] is not None]

        def wal(rs):
            values = [r["wal_bytes_per_row"] for r in rs if r["wal_bytes_per_row"] is not None]
            return float(np.mean(values)) if values else None
        out.append({"side": side, "config": config, "clients": clients, "indexed_rows_per_s": a,
                    "noindex_rows_per_s": b, "ratio": a / b if a and b else None,
                    "indexed_batch_p50_ms": float(np.median([r["batch_p50_ms"] for r in idx])),
                    "noindex_batch_p50_ms": float(np.median([r["batch_p50_ms"] for r in none])),
                    "index_bytes_per_inserted_row": float(np.mean(growth)) if growth else None,
                    "noindex_wal_bytes_per_row": wal(none), "indexed_wal_bytes_per_row": wal(idx),
                    "runs": len(idx)})
    return out


def insert_part_ivfpq(conn, dsn, n_base, pool, args):
    build = create_ivfpq_index(conn, args)
    runs = insert_runs("ivfpq", conn, dsn, "ivfpq", IVFPQ_INDEX, n_base, pool, args)
    build["stats_after_inserts"] = ivfpq_bench.index_stats(conn, IVFPQ_INDEX)
    build["index_bytes_after_inserts"] = conn.execute("SELECT pg_relation_size(%s::regclass)",
                                                      (IVFPQ_INDEX,)).fetchone()[0]
    conn.execute(f"DROP INDEX {IVFPQ_INDEX}")
    restore_base(conn, n_base)
    args.next_id.pop(dsn + TABLE, None)
    return build, runs


# --------------------------------------------------------------------------
# pgvector (part 1, in its own database)
# --------------------------------------------------------------------------

def pgvector_checkout(path):
    """Version and git description of a pgvector checkout, and its built vector.so's hash."""
    out = {"path": os.path.abspath(path)}
    with open(os.path.join(path, "vector.control")) as f:
        for line in f:
            if line.startswith("default_version"):
                out["version"] = line.split("=", 1)[1].strip().strip("'")
    try:
        out["git"] = subprocess.run(["git", "-C", path, "describe", "--tags", "--always", "--dirty"],
                                    capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out["git"] = None
    so = os.path.join(path, "vector.so")
    if os.path.exists(so):
        with open(so, "rb") as f:
            out["built_sha256"] = hashlib.sha256(f.read()).hexdigest()[:16]
    return out


def pgvector_installed(conn, checkout):
    """The installed pgvector (pg_available_extensions, $libdir/vector.so) against the checkout."""
    row = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'").fetchone()
    if row is None:
        raise SystemExit(f"pgvector is not installed: run make && make install in {checkout['path']}")
    if row[0] != checkout.get("version"):
        raise SystemExit(f"installed pgvector is {row[0]}, the checkout {checkout['path']} is "
                         f"{checkout.get('version')}: run make install there")
    libdir = conn.execute("SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'").fetchone()[0]
    try:
        with open(os.path.join(libdir, "vector.so"), "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:16]
    except OSError:
        digest = None
    return {"installed_version": row[0], "installed_sha256": digest,
            "same_as_checkout_build": digest == checkout.get("built_sha256") if digest else None}


def insert_part_pgvector(admin, args, base, pool):
    """Part 1 on pgvector: its own database, table, no-index table, then ivfflat and hnsw in turn."""
    db = args.pgvector_db
    admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    admin.execute(f"CREATE DATABASE {db}")
    dsn = conninfo.make_conninfo(args.dsn, dbname=db)
    out = {"database": db, "rows": args.pgvector_rows, "builds": {}, "runs": []}
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")
            out["extversion"] = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
            out["load_s"] = load_base(conn, base[:args.pgvector_rows], "pgvector")
            out["table_bytes"] = conn.execute(f"SELECT pg_table_size('{TABLE}')").fetchone()[0]
            out["storage"] = conn.execute(
                "SELECT attstorage FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'embedding'",
                (TABLE,)).fetchone()[0]
            lists = args.ivfflat_lists or args.lists or default_lists(args.pgvector_rows)
            kinds = [("ivfflat", f"WITH (lists = {lists})"), ("hnsw", f"WITH ({args.hnsw_options})")]
            for kind, with_clause in kinds:
                index = f"{TABLE}_embedding_{kind}"
                sql = f"CREATE INDEX {index} ON {TABLE} USING {kind} (embedding vector_l2_ops) {with_clause}"
                build = create_pgvector_index(conn, sql, index, args.maintenance_work_mem)
                out["runs"] += insert_runs("pgvector", conn, dsn, kind, index, args.pgvector_rows, pool, args)
                build["index_bytes_after_inserts"] = conn.execute(
                    "SELECT pg_relation_size(%s::regclass)", (index,)).fetchone()[0]
                out["builds"][kind] = build
                conn.execute(f"DROP INDEX {index}")
                restore_base(conn, args.pgvector_rows)
                args.next_id.pop(dsn + TABLE, None)
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    return out


# --------------------------------------------------------------------------
# Ground truth over the rows present, recall by distance
# --------------------------------------------------------------------------

class Rows:
    """The vector of every row id: ids below n_base are base rows, the others come from extra
    (row n_base + i has extra[i % len(extra)])."""

    def __init__(self, base, n_base, extra):
        self.base, self.n_base, self.extra = base, n_base, extra

    def vectors(self, ids):
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((ids.size, self.base.shape[1]), dtype=np.float64)
        old = ids < self.n_base
        if old.any():
            out[old] = self.base[np.sort(ids[old])][np.argsort(np.argsort(ids[old]))]
        if (~old).any():
            out[~old] = self.extra[(ids[~old] - self.n_base) % self.extra.shape[0]]
        return out


def sq_dist(queries, X):
    """Squared L2 distances (float64) of every query to every row of X."""
    return (queries ** 2).sum(1)[:, None] + (X ** 2).sum(1)[None, :] - 2 * queries @ X.T


def base_topk(ds, rows, n_base, nq, queries):
    """The K smallest squared distances of each query over the first n_base rows (exact
    top-100 ids from datasets.py, cached, then exact float64 distances), ascending."""
    ids = ds.limit(n_base, nq).ground_truth("l2")[:nq, :K]
    d = np.empty((nq, K))
    for q in range(nq):
        d[q] = sq_dist(queries[q:q + 1], rows.vectors(ids[q]))[0]
    return np.sort(d, axis=1)


def found_distances(queries, rows, exec_q, found, chunk=2000):
    """Squared distance of each found row (found: (n, K), -1 = none) to its query; inf for none."""
    out = np.full(found.shape, np.inf)
    for s in range(0, found.shape[0], chunk):
        f = found[s:s + chunk]
        valid = f >= 0
        X = rows.vectors(f[valid])
        Q = queries[np.repeat(exec_q[s:s + chunk], valid.sum(1))]
        d = (Q ** 2).sum(1) + (X ** 2).sum(1) - 2 * np.einsum("ij,ij->i", Q, X)
        block = out[s:s + chunk]
        block[valid] = d
    return out


def running_topk(queries, base_d, rows, first, n, need_b, need_q, chunk_rows=4096):
    """For execution e, the K smallest distances from query need_q[e] over the base rows and
    the first need_b[e] batches (first[j], n[j]: ids first..first+n-1, in commit order), with
    a flag for rows from batches."""
    run_d, run_new = base_d.copy(), np.zeros(base_d.shape, dtype=bool)
    out_d, out_new = np.empty((len(need_b), K)), np.empty((len(need_b), K), dtype=bool)
    order = np.argsort(need_b, kind="stable")
    pos = 0

    def snapshot(b):
        nonlocal pos
        start = pos
        while pos < len(order) and need_b[order[pos]] == b:
            pos += 1
        idx = order[start:pos]
        out_d[idx], out_new[idx] = run_d[need_q[idx]], run_new[need_q[idx]]

    snapshot(0)
    b = 0
    while b < len(first):
        stop, count = b, 0
        while stop < len(first) and (count == 0 or count + n[stop] <= chunk_rows):
            count += n[stop]
            stop += 1
        ids = np.concatenate([np.arange(first[j], first[j] + n[j]) for j in range(b, stop)])
        D = sq_dist(queries, rows.vectors(ids))
        col = 0
        for j in range(b, stop):
            d = D[:, col:col + n[j]]
            col += n[j]
            if d.shape[1] > K:
                d = np.partition(d, K - 1, axis=1)[:, :K]
            both = np.concatenate([run_d, d], axis=1)
            flags = np.concatenate([run_new, np.ones(d.shape, dtype=bool)], axis=1)
            sel = np.argsort(both, axis=1, kind="stable")[:, :K]
            run_d, run_new = np.take_along_axis(both, sel, 1), np.take_along_axis(flags, sel, 1)
            snapshot(j + 1)
        b = stop
    return out_d, out_new


def churn_recall(queries, base_d, rows, batches, exec_q, exec_t, found):
    """Recall@10 of searches against the rows present when each was sent.

    The truth of a search is the K nearest among the base rows, the inserted rows of
    every batch acknowledged (committed) before the search was sent, and the rows it
    found itself (a row returned is a row its snapshot held, even from a batch whose
    acknowledgement came later). A found row is a hit when its distance is at most the
    K-th true distance (so a repeated vector is no miss)."""
    n_exec = len(exec_q)
    if batches is None or len(batches["first"]) == 0:
        first = n = ack = np.zeros(0, dtype=np.int64)
    else:
        order = np.argsort(batches["t_ack"], kind="stable")
        first, n, ack = batches["first"][order], batches["n"][order], batches["t_ack"][order]
    need_b = np.searchsorted(ack, exec_t, side="left") if len(ack) else np.zeros(n_exec, dtype=np.int64)
    snap_d, snap_new = running_topk(queries, base_d, rows, first, n, need_b, exec_q)
    fd = found_distances(queries, rows, exec_q, found)
    valid = found >= 0
    is_new = valid & (found >= rows.n_base)
    # Commit rank of the batch holding each new row found.
    if len(first):
        by_id = np.argsort(first)
        pos = np.clip(np.searchsorted(first[by_id], found, side="right") - 1, 0, None)
        rank = by_id[pos]
        inside = found < first[rank] + n[rank]
        sure = ~is_new | (inside & (rank < need_b[:, None]))
    else:
        sure = ~is_new
    late = valid & ~sure
    cand_d = np.concatenate([snap_d, np.where(late, fd, np.inf)], axis=1)
    cand_new = np.concatenate([snap_new, late], axis=1)
    sel = np.argsort(cand_d, axis=1, kind="stable")[:, :K]
    kth = np.take_along_axis(cand_d, sel, 1)[:, K - 1]
    truth_new = np.take_along_axis(cand_new, sel, 1).sum(1)
    hit = valid & (fd <= kth[:, None] + DIST_EPS)
    hits = np.minimum(hit.sum(1), K)
    new_hits = (hit & is_new).sum(1)
    return {"recall@10": float(hits.sum() / (K * n_exec)) if n_exec else None,
            "truth_new_rows": int(truth_new.sum()), "found_new_rows": int(is_new.sum()),
            "recall_new_rows": float(min(1.0, new_hits.sum() / truth_new.sum())) if truth_new.sum() else None,
            "searches_finding_rows_acknowledged_later": int(late.any(1).sum())}


# --------------------------------------------------------------------------
# Part 3: searches alone and under inserts
# --------------------------------------------------------------------------

def search_for(conn, table, queries, seconds):
    """Prepared k-NN searches one at a time for `seconds`, cycling over the queries.
    Returns query index, send time, latency and ids found ((n, K), -1 padded) per search."""
    sql = pgclient.knn_sql("l2", K, table)
    params = [pgclient.Vector(q) for q in queries]
    qi, sent, lat, found = [], [], [], []
    end = time.perf_counter() + seconds
    with conn.cursor(binary=True) as cur:
        i = 0
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                break
            j = i % len(params)
            cur.execute(sql, (params[j],), prepare=True)
            ids = [r[0] for r in cur.fetchall()]
            lat.append(time.perf_counter() - t0)
            qi.append(j)
            sent.append(t0)
            found.append(ids[:K] + [-1] * (K - len(ids)))
            i += 1
    return {"q": np.array(qi, dtype=np.int64), "sent": np.array(sent), "latency": np.array(lat),
            "found": np.array(found, dtype=np.int64).reshape(-1, K)}


def search_phase_row(name, s, recall, inserts=None):
    row = {"phase": name, "searches": int(len(s["q"])), **pgclient.latency_summary(s["latency"]), **recall}
    if inserts is not None:
        row.update({"insert_rows": inserts["rows"], "insert_rows_per_s": inserts["rows_per_s"],
                    "insert_batch_p50_ms": inserts["batch_p50_ms"], "insert_batch_p99_ms": inserts["batch_p99_ms"]})
    log(f"search {name:>14}: {row['searches']} searches, {row['qps']:.1f} QPS, p50 {row['p50_ms']:.2f} ms, "
        f"p99 {row['p99_ms']:.2f} ms, recall@10 {fmt(row['recall@10'])}"
        + (f"; inserts {inserts['rows_per_s']:.0f} rows/s" if inserts else ""))
    return row


def search_part(conn, dsn, args, base, pool, queries, spare, base_d):
    n_base = args.rows
    build = create_ivfpq_index(conn, args)
    pgclient.prewarm(conn, TABLE)
    pgclient.prewarm(conn, IVFPQ_INDEX)
    conn.execute(f"SET ivfpq.probes = {int(args.probes)}")
    conn.execute(f"SET ivfpq.rerank = {int(args.rerank)}")
    plan, notes = pgclient.index_plan(conn, queries[0], lambda text: IVFPQ_INDEX in text, "l2", K, TABLE, log)
    pgclient.run_queries(conn, spare, "l2", K, TABLE)  # warm-up, untimed
    rows = Rows(base, n_base, pool)
    q64 = np.asarray(queries, dtype=np.float64)

    conn.execute("CHECKPOINT")
    alone = search_for(conn, TABLE, queries, args.seconds)
    conn.execute("CHECKPOINT")
    ins = run_inserts(dsn, TABLE, args.insert_clients, n_base, pool, args,
                      during=lambda: search_for(conn, TABLE, queries, args.seconds))
    during = ins["during"]
    conn.execute("CHECKPOINT")
    after = search_for(conn, TABLE, queries, args.seconds)
    present = count_rows(conn, TABLE)

    log("search: computing the ground truth over the rows present at each search")
    t0 = time.perf_counter()
    phases = [search_phase_row("alone, before", alone, churn_recall(q64, base_d, rows, None, alone["q"],
                                                                      alone["sent"], alone["found"])),
              search_phase_row("under inserts", during, churn_recall(q64, base_d, rows, ins["batch_records"],
                                                                     during["q"], during["sent"], during["found"]),
                               ins),
              search_phase_row("alone, after", after, churn_recall(q64, base_d, rows, ins["batch_records"],
                                                                    after["q"], after["sent"], after["found"]))]
    truth_s = time.perf_counter() - t0
    qps_alone = (phases[0]["qps"] + phases[2]["qps"]) / 2
    return {"build": build, "plan": plan, "notes": notes, "probes": args.probes, "rerank": args.rerank,
            "nqueries": len(queries), "insert_clients": args.insert_clients, "phases": phases,
            "inserted_rows": ins["rows"] + ins["warmup_rows"], "rows_present_after": present,
            "qps_under_inserts_over_alone": phases[1]["qps"] / qps_alone if qps_alone else None,
            "stats_after": ivfpq_bench.index_stats(conn, IVFPQ_INDEX), "truth_s": truth_s}


# --------------------------------------------------------------------------
# Part 2: VACUUM after deleting a fraction of the rows
# --------------------------------------------------------------------------

class VacuumProgress(threading.Thread):
    """Samples pg_stat_progress_vacuum for one table from its own connection; phase changes
    with their times."""

    def __init__(self, dsn, table, interval=0.02):
        super().__init__(daemon=True)
        self.dsn, self.table, self.interval = dsn, table, interval
        self.done = threading.Event()
        self.changes = []
        self.ready = threading.Event()

    def run(self):
        with psycopg.connect(self.dsn, autocommit=True) as c:
            last = object()
            self.ready.set()
            while not self.done.is_set():
                row = c.execute("SELECT phase FROM pg_stat_progress_vacuum WHERE relid = %s::regclass",
                                (self.table,)).fetchone()
                phase = row[0] if row else None
                if phase != last:
                    self.changes.append((time.perf_counter(), phase))
                    last = phase
                self.done.wait(self.interval)

    def phases(self, end):
        """Seconds per phase name (as sampled, to within the interval)."""
        out = {}
        for (t, phase), nxt in zip(self.changes, self.changes[1:] + [(end, None)]):
            if phase:
                out[phase] = out.get(phase, 0.0) + max(0.0, nxt[0] - t)
        return out


def timed_vacuum(conn, dsn, table):
    """VACUUM (VERBOSE) table, timed, with its phases and its INFO report."""
    progress = VacuumProgress(dsn, table)
    progress.start()
    progress.ready.wait(30)
    notices = []
    handler = lambda d: notices.append(d.message_primary)  # noqa: E731
    conn.add_notice_handler(handler)
    try:
        t0 = time.perf_counter()
        conn.execute(f"VACUUM (VERBOSE) {table}")
        end = time.perf_counter()
    finally:
        conn.remove_notice_handler(handler)
        progress.done.set()
        progress.join(10)
    return end - t0, progress.phases(end), notices


def search_recall_fixed(conn, queries, spare, rows, base_d):
    """recall@10 and QPS of one pass over the queries when the table holds the same
    vectors as the base rows (distance-based, against base_d)."""
    ids, lat = pgclient.run_queries(conn, queries, "l2", K, TABLE, warmup=spare)
    found = np.array([list(i[:K]) + [-1] * (K - len(i)) for i in ids], dtype=np.int64)
    q64 = np.asarray(queries, dtype=np.float64)
    fd = found_distances(q64, rows, np.arange(len(queries)), found)
    hits = np.minimum(((found >= 0) & (fd <= base_d[:, K - 1:K] + DIST_EPS)).sum(1), K)
    return {"recall@10": float(hits.sum() / (K * len(queries))), **pgclient.latency_summary(lat)}


def vacuum_part(conn, dsn, args, base, queries, spare, base_d):
    """Delete a random fraction of a fresh --vacuum-rows table with an ivfpq index, VACUUM,
    re-insert as many rows; sizes and index stats at each step."""
    V = args.vacuum_rows
    build = create_ivfpq_index(conn, args)
    pgclient.prewarm(conn, TABLE)
    pgclient.prewarm(conn, IVFPQ_INDEX)
    conn.execute(f"SET ivfpq.probes = {int(args.probes)}")
    conn.execute(f"SET ivfpq.rerank = {int(args.rerank)}")
    pgclient.index_plan(conn, queries[0], lambda text: IVFPQ_INDEX in text, "l2", K, TABLE, log)
    dead = np.sort(np.random.default_rng(args.seed).choice(V, size=int(round(V * args.delete_fraction)),
                                                           replace=False))
    rows = Rows(base, V, np.asarray(base[dead]))
    out = {"rows": V, "deleted": int(dead.size), "build": build, "steps": {}}

    def snapshot(step):
        s = sizes(conn, TABLE, IVFPQ_INDEX)
        s["stats"] = ivfpq_bench.index_stats(conn, IVFPQ_INDEX)
        s["rows"] = count_rows(conn, TABLE)
        out["steps"][step] = s
        log(f"vacuum {step:>16}: {s['rows']} rows, index {mib(s['index_bytes'])}, heap {mib(s['heap_bytes'])}")

    snapshot("before delete")
    out["search_before"] = search_recall_fixed(conn, queries, spare, rows, base_d)
    conn.execute("CHECKPOINT")
    t0 = time.perf_counter()
    conn.execute(f"DELETE FROM {TABLE} WHERE id = ANY(%s::int[])", (dead.tolist(),))
    out["delete_s"] = time.perf_counter() - t0
    conn.execute("CHECKPOINT")
    out["vacuum_s"], out["vacuum_phases"], out["vacuum_verbose"] = timed_vacuum(conn, dsn, TABLE)
    log(f"vacuum: DELETE of {dead.size} rows {out['delete_s']:.1f} s, VACUUM {out['vacuum_s']:.1f} s "
        f"({', '.join(f'{k} {v:.1f} s' for k, v in out['vacuum_phases'].items())})")
    snapshot("after VACUUM")
    # Pages this VACUUM unlinked become reusable once no transaction that was running
    # when they were unlinked is left (as nbtree's): the next VACUUM, which autovacuum
    # would run, hands them to the free space map. Run it, as a DBA's autovacuum would.
    conn.execute("SELECT txid_current()")
    t0 = time.perf_counter()
    conn.execute(f"VACUUM {TABLE}")
    out["second_vacuum_s"] = time.perf_counter() - t0
    log(f"vacuum: second VACUUM (records the freed pages) {out['second_vacuum_s']:.1f} s")
    snapshot("after 2nd VACUUM")

    # Re-insert the deleted vectors under new ids (V, V+1, ...): the same vectors as before
    # the delete, so each list gets back as many entries as it lost.
    conn.execute("CHECKPOINT")
    t0 = time.perf_counter()
    for s in range(0, dead.size, args.batch):
        ids = np.arange(V + s, V + min(dead.size, s + args.batch))
        write_batch(conn, TABLE, ids, rows.vectors(ids).astype(np.float32), args.method)
    secs = time.perf_counter() - t0
    out["reinsert_s"], out["reinsert_rows_per_s"] = secs, dead.size / secs
    log(f"vacuum: re-inserted {dead.size} rows in {secs:.1f} s ({dead.size / secs:.0f} rows/s, 1 client)")
    snapshot("after re-insert")
    out["search_after"] = search_recall_fixed(conn, queries, spare, rows, base_d)
    before, after = out["steps"]["before delete"], out["steps"]["after re-insert"]
    out["index_growth"] = after["index_bytes"] / before["index_bytes"]
    out["heap_growth"] = after["heap_bytes"] / before["heap_bytes"]
    return out


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def verdict(ratio):
    if ratio is None:
        return "–"
    return "meets" if ratio >= TARGET_RATIO else "below"


def insert_table(summary):
    lines = ["| side | index | clients | rows/s no index | rows/s indexed | indexed / no index | "
             "batch p50 ms (no index / indexed) | WAL bytes per row (no index / indexed) "
             "| index bytes per inserted row |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['side']} | {s['config']} | {s['clients']} | {fmt(s['noindex_rows_per_s'], '.0f')} | "
                     f"{fmt(s['indexed_rows_per_s'], '.0f')} | **{fmt(s['ratio'], '.2f')}** | "
                     f"{s['noindex_batch_p50_ms']:.1f} / {s['indexed_batch_p50_ms']:.1f} | "
                     f"{fmt(s['noindex_wal_bytes_per_row'], '.0f')} / {fmt(s['indexed_wal_bytes_per_row'], '.0f')} | "
                     f"{fmt(s['index_bytes_per_inserted_row'], '.0f')} |")
    return lines + [""]


def runs_table(runs):
    lines = ["| side | config | table | clients | run | rows | seconds | rows/s | batch p50 ms | batch p99 ms "
             "| WAL bytes per row |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['side']} | {r['config']} | {r['table']} | {r['clients']} | {r['round'] + 1} | "
                     f"{r['rows']} | {r['seconds']:.1f} | {r['rows_per_s']:.0f} | {r['batch_p50_ms']:.1f} | "
                     f"{r['batch_p99_ms']:.1f} | {fmt(r['wal_bytes_per_row'], '.0f')} |")
    return lines + [""]


def stats_table(steps):
    names = list(steps)
    keys = []
    for s in steps.values():
        for k in (s.get("stats") or {}):
            if k not in keys:
                keys.append(k)
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, key in (("rows in the table", "rows"), ("ivfpq index (pg_relation_size)", "index_bytes"),
                       ("all indexes (pg_indexes_size)", "indexes_bytes"), ("heap (main fork)", "heap_bytes"),
                       ("table (pg_table_size)", "table_bytes")):
        vals = [steps[n][key] for n in names]
        lines.append(f"| {label} | " + " | ".join(str(v) if key == "rows" else mib(v) for v in vals) + " |")
    for k in keys:
        lines.append(f"| ivfpq_index_stats.{k} | " + " | ".join(
            str((steps[n].get("stats") or {}).get(k, "–")) for n in names) + " |")
    return lines + [""]


def summary_lines(result):
    out = []
    for s in result.get("insert", {}).get("summary", []):
        target = f" (target >= {TARGET_RATIO}: {verdict(s['ratio'])})" if s["config"] == "ivfpq" else ""
        out.append(f"insert, {s['clients']} client(s), {s['side']} {s['config']}: "
                   f"{fmt(s['indexed_rows_per_s'], '.0f')} rows/s vs {fmt(s['noindex_rows_per_s'], '.0f')} "
                   f"without a vector index, ratio {fmt(s['ratio'], '.2f')}{target}")
    v = result.get("vacuum")
    if v:
        st = v["steps"]
        out.append(f"VACUUM after deleting {v['deleted']} of {v['rows']} rows: {v['vacuum_s']:.1f} s; ivfpq index "
                   f"{mib(st['before delete']['index_bytes'])} before, {mib(st['after VACUUM']['index_bytes'])} "
                   f"after VACUUM, {mib(st['after re-insert']['index_bytes'])} after re-inserting as many rows "
                   f"(x{v['index_growth']:.2f}; heap x{v['heap_growth']:.2f}); recall@10 "
                   f"{v['search_before']['recall@10']:.3f} -> {v['search_after']['recall@10']:.3f}")
    s = result.get("search")
    if s:
        a, b, c = s["phases"]
        out.append(f"search (probes {s['probes']}, rerank {s['rerank']}): {a['qps']:.1f} QPS alone before, "
                   f"{b['qps']:.1f} under {s['insert_clients']} insert client(s) ({b['insert_rows_per_s']:.0f} rows/s), "
                   f"{c['qps']:.1f} alone after; under inserts / alone {fmt(s['qps_under_inserts_over_alone'], '.2f')}; "
                   f"recall@10 {fmt(a['recall@10'])} / {fmt(b['recall@10'])} / {fmt(c['recall@10'])}")
    return out


def markdown(result):
    args = result["args"]
    title = (f"Live data under churn: {result['dataset']['name']} ({args['rows']} rows x {result['dataset']['dim']}"
             f" for inserts and searches, {args['vacuum_rows']} for VACUUM)")
    lines = ivfpq_bench.wrapped_report_head(title, result)
    env = result["environment"]
    if env.get("pgvector"):
        p = env["pgvector"]
        lines.append(f"- pgvector: checkout {p['path']} ({p.get('git')}, version {p.get('version')}), installed "
                     f"{p.get('installed_version')}, vector.so sha256 {p.get('installed_sha256')} "
                     f"(same as the checkout's build: {p.get('same_as_checkout_build')})")
    method = "binary COPY" if args["method"] == "copy" else "multi-row INSERT (binary parameters)"
    lines += [f"- inserts: batches of {args['batch']} rows, {method} per statement, autocommit, one process and "
              f"connection per client, at full speed; vectors from the {args['pool']} dataset rows after the base "
              "rows, cycled",
              f"- searches: `SELECT id FROM items ORDER BY embedding <-> $1 LIMIT 10`, prepared, binary vector "
              f"parameter, one at a time, cycling over {result['nqueries']} query vectors; ivfpq.probes = "
              f"{args['probes']}, ivfpq.rerank = {args['rerank']}",
              "- autovacuum off on the measured tables (so that it does not run inside a timed window); every "
              "table has an int primary key (btree), in every configuration", ""]
    lines += ["## Summary", ""] + [f"- {s}" for s in summary_lines(result)] + [""]
    lines += [f"> {n}" for n in result["notes"]] + ([""] if result["notes"] else [])

    ins = result.get("insert")
    if ins:
        lines += ["## 1. Insert throughput", "",
                  f"Each indexed configuration against a table without a vector index on the same side, "
                  f"{args['rounds']} runs of {args['seconds'] / args['rounds']:g} s per client count, alternating "
                  "(no index, indexed, indexed, no index, ...) so that the shared machine's noise hits both "
                  "alike; a CHECKPOINT before each run. The indexed table holds the loaded rows (and the rows "
                  "of the earlier runs) and an index built on the loaded rows before the timed inserts; the "
                  f"no-index table (`{NOINDEX}`, `CREATE TABLE ... (LIKE items INCLUDING ALL)`: same columns, "
                  "storage and primary key) is emptied before each of its runs: an insert without a vector "
                  "index appends to the heap and the primary key whatever the table holds. Rows/s are the rows "
                  "of the timed batches over the time from the start to the last acknowledgement, summed over "
                  "the runs. WAL bytes per row: the WAL insert position before and after a run over the rows it "
                  "inserted (with each client's untimed warm-up batch); each run starts after a CHECKPOINT, so "
                  "this includes the full-page image of the first change to each page (an index's list tails, "
                  "the primary key's right edge). Index bytes per inserted row: the index's growth over the "
                  f"same rows. Issue 8's target for ivfpq: indexed / no index >= {TARGET_RATIO}.", ""]
        lines += insert_table(ins["summary"])
        lines += ["| index | CREATE INDEX | s | size after build | size after the timed inserts |", "|---|---|---|---|---|"]
        for name, b in ins["builds"].items():
            lines.append(f"| {name} | `{b['sql']}` | {b['build_s']:.1f} | {mib(b['index_bytes'])} | "
                         f"{mib(b['index_bytes_after_inserts'])} |")
        lines.append("")
        lines += [f"- table load (binary COPY, primary key, VACUUM ANALYZE): ivfpq side {ins['load_s']:.1f} s"
                  + (f", pgvector side {ins['pgvector']['load_s']:.1f} s ({ins['pgvector']['rows']} rows, embedding "
                     f"storage {ins['pgvector']['storage']}: pgvector's `vector` is TOASTed out of line above ~2 KB, "
                     "ivfpq's stays inline, so the two no-index baselines differ)" if ins.get("pgvector") else ""),
                  ""]
        lines += ["Every run:", ""] + runs_table(ins["runs"])

    v = result.get("vacuum")
    if v:
        lines += [f"## 2. VACUUM after deleting {args['delete_fraction']:.0%} of the rows", "",
                  f"A fresh table of {v['rows']} rows with a fresh ivfpq index (`{v['build']['sql']}`, "
                  f"{v['build']['build_s']:.1f} s); {v['deleted']} rows chosen at random (seed {args['seed']}) "
                  f"deleted in one statement ({v['delete_s']:.1f} s), CHECKPOINT, then `VACUUM (VERBOSE) items`: "
                  f"**{v['vacuum_s']:.1f} s**. A second `VACUUM items` ({v.get('second_vacuum_s', float('nan')):.1f} s) "
                  "hands the index pages the first one unlinked to the free space map (they are reusable once no "
                  "transaction that was running when they were unlinked is left, as with nbtree; autovacuum's next "
                  "run does this). Then the deleted rows' vectors re-inserted under new ids, "
                  f"{args['batch']} rows per statement from one client ({v['reinsert_s']:.1f} s, "
                  f"{v['reinsert_rows_per_s']:.0f} rows/s): the table holds the same vectors as before the delete, "
                  "so every list gets back as many entries as it lost, and an index that reuses freed space "
                  "returns to its size before the delete.", "",
                  "VACUUM phases (pg_stat_progress_vacuum, sampled every 20 ms; index phases include the "
                  "primary key's btree): " + ", ".join(f"{k} {s:.2f} s" for k, s in v["vacuum_phases"].items()), ""]
        lines += stats_table(v["steps"])
        lines += [f"Index size after re-insert / before delete: **{v['index_growth']:.2f}**; heap: "
                  f"{v['heap_growth']:.2f}.", "",
                  "| | recall@10 | QPS | p50 ms | p99 ms |", "|---|---|---|---|---|"]
        for label, key in (("before the delete", "search_before"), ("after VACUUM and re-insert", "search_after")):
            s = v[key]
            lines.append(f"| {label} | {s['recall@10']:.3f} | {s['qps']:.1f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} |")
        lines += ["", f"({result['nqueries']} queries, ivfpq.probes = {args['probes']}, ivfpq.rerank = "
                  f"{args['rerank']}; the truth is the same before and after, the table holding the same vectors.)",
                  "", "VACUUM (VERBOSE):", "", "```"]
        for n in v["vacuum_verbose"]:
            lines += n.splitlines()
        lines += ["```", ""]

    s = result.get("search")
    if s:
        lines += ["## 3. Searches alone and under inserts", "",
                  f"A fresh ivfpq index over the {args['rows']} loaded rows (`{s['build']['sql']}`, "
                  f"{s['build']['build_s']:.1f} s). Searches from one connection for {args['seconds']:g} s alone, "
                  f"then {args['seconds']:g} s while {s['insert_clients']} other client(s) insert at full speed "
                  f"({s['inserted_rows']} rows), then {args['seconds']:g} s alone again ({s['rows_present_after']} "
                  "rows present).", "",
                  "| phase | searches | QPS | p50 ms | p99 ms | recall@10 | new rows in the truth | found new rows "
                  "| recall of new rows | inserts rows/s |", "|---|---|---|---|---|---|---|---|---|---|"]
        for p in s["phases"]:
            lines.append(f"| {p['phase']} | {p['searches']} | {p['qps']:.1f} | {p['p50_ms']:.2f} | "
                         f"{p['p99_ms']:.2f} | {fmt(p['recall@10'])} | {p['truth_new_rows']} | {p['found_new_rows']} | "
                         f"{fmt(p['recall_new_rows'])} | {fmt(p.get('insert_rows_per_s'), '.0f')} |")
        lines += ["", f"QPS under inserts / alone (mean of before and after): "
                  f"**{fmt(s['qps_under_inserts_over_alone'], '.2f')}**.", "",
                  "Ground truth: for each search, the exact 10 nearest (float64, brute force) among the loaded "
                  "rows and the rows of every insert batch whose commit was acknowledged before the search was "
                  "sent (the search's snapshot holds all of them), plus any row the search returned from a batch "
                  "acknowledged later (it was in the snapshot). Rows committed while a search ran and not returned "
                  "by it are left out: the snapshot may or may not hold them. This is the truth over the rows "
                  "present, rather than over the loaded rows only, so that a search that correctly returns a "
                  "new, closer row is not counted as missing an old one. A returned row is a hit when its "
                  "distance is at most the 10th true distance (inserted vectors repeat once the pool is used "
                  "up). \"New rows\" are rows inserted after the index was built; \"recall of new rows\" is the "
                  f"share of the new rows in the truth that the searches returned. Searches that returned a row "
                  f"acknowledged after they were sent: {s['phases'][1]['searches_finding_rows_acknowledged_later']}.",
                  ""]
        if s.get("stats_after"):
            lines += ["ivfpq_index_stats after the searches: "
                      + ", ".join(f"{k} = {val}" for k, val in s["stats_after"].items()), ""]
        lines += ["Plan:", "", "```"] + s["plan"].splitlines() + ["```", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    args.next_id = {}
    M = max(args.rows, args.vacuum_rows, args.pgvector_rows if args.pgvector else 0)
    ds = datasets.load(f"generated:{M + args.pool}")
    base, pool = ds.base, np.asarray(ds.base[M:M + args.pool], dtype=np.float32)
    nq = min(args.nqueries, ds.queries.shape[0])
    queries = np.asarray(ds.queries[:nq], dtype=np.float32)
    spare = pgclient.warmup_queries(ds, nq, args.warmup)
    log(f"dataset {ds.name}: {args.rows} rows for inserts and searches, {args.vacuum_rows} for VACUUM, "
        f"{args.pool} pool rows after row {M}; {nq} queries; parts {', '.join(args.parts)}")

    conn = psycopg.connect(args.dsn, autocommit=True)
    try:
        pgclient.ensure_ivfpq(conn)
        environment = ivfpq_bench.machine_notes(conn)
        environment["wrapper"] = ivfpq_bench.wrapper_command("churn_bench.py", "churn.sh")
        checkout = None
        if args.pgvector:
            checkout = pgvector_checkout(args.pgvector)
            checkout.update(pgvector_installed(conn, checkout))
            environment["pgvector"] = checkout
        result = {"dataset": {"name": ds.name, "rows": int(base.shape[0]), "dim": int(ds.dim)},
                  "args": {k: v for k, v in vars(args).items() if k != "next_id"}, "nqueries": nq,
                  "environment": environment, "settings": ivfpq_bench.server_settings(conn), "notes": []}
        loaded = None
        if "insert" in args.parts or "search" in args.parts:
            load_s = load_base(conn, base[:args.rows])
            loaded = args.rows
        if "insert" in args.parts:
            build, runs = insert_part_ivfpq(conn, args.dsn, args.rows, pool, args)
            result["insert"] = {"load_s": load_s, "builds": {"ivfpq": build}, "runs": runs}
            if args.pgvector:
                pv = insert_part_pgvector(conn, args, base, pool)
                result["insert"]["pgvector"] = {k: v for k, v in pv.items() if k != "runs"}
                result["insert"]["builds"].update(pv["builds"])
                result["insert"]["runs"] += pv["runs"]
            result["insert"]["summary"] = insert_summary(result["insert"]["runs"])
        if "search" in args.parts:
            base_d = base_topk(ds, Rows(base, args.rows, pool), args.rows, nq, np.asarray(queries, dtype=np.float64))
            result["search"] = search_part(conn, args.dsn, args, base, pool, queries, spare, base_d)
            result["notes"] += result["search"].pop("notes")
            conn.execute(f"DROP INDEX {IVFPQ_INDEX}")
            conn.execute("RESET ALL")
        if "vacuum" in args.parts:
            if loaded == args.vacuum_rows:
                restore_base(conn, args.vacuum_rows)
            else:
                load_base(conn, base[:args.vacuum_rows])
            conn.execute(f"DROP TABLE IF EXISTS {NOINDEX}")
            base_d = base_topk(ds, Rows(base, args.vacuum_rows, pool), args.vacuum_rows, nq,
                               np.asarray(queries, dtype=np.float64))
            result["vacuum"] = vacuum_part(conn, args.dsn, args, base, queries, spare, base_d)
        ivfpq_bench.finish_environment(conn, environment, result["notes"])
    finally:
        conn.close()

    path = args.results or ivfpq_bench.default_results_path(
        f"generated-{args.rows}-vac{args.vacuum_rows}", "churn-")
    ivfpq_bench.write_results(result, path, markdown(result), summary_lines(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
