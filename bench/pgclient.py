#!/usr/bin/python3
"""Postgres client helpers shared by the ivfpq benchmark and demo (psycopg 3).

- load_table: (re)create ``items (id int PRIMARY KEY, [ts timestamptz,]
  embedding vector(d))`` and fill it with a binary COPY (copy_into) whose rows
  are built with numpy (int32 id, optionally an int64 timestamp, then the
  vector's binary form: int16 dim, int16 0, float4 values, all big-endian);
- Vector + register_vector: send a query vector as a binary ``vector``
  parameter of a prepared statement;
- run_queries: issue k-NN queries one at a time and time each one;
- index_plan: the k-NN plan, forced onto the index when the planner prefers a
  sequential scan;
- memory_contexts: the backend's memory, in total and in ivfpq's contexts.
"""

import datetime
import os
import re
import struct
import time

import numpy as np
import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)

# Distance operator and ivfpq operator class for each metric.
OPERATORS = {"l2": "<->", "ip": "<#>", "cosine": "<=>"}
OPCLASSES = {"l2": "vector_l2_ops", "ip": "vector_ip_ops", "cosine": "vector_cosine_ops"}


# Binary timestamptz: int64 microseconds since 2000-01-01 00:00 UTC.
PG_EPOCH = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)


def pg_microseconds(moment):
    """A timezone-aware datetime as binary timestamptz (microseconds since PG_EPOCH)."""
    return (moment - PG_EPOCH) // datetime.timedelta(microseconds=1)


def copy_rows(ids, vectors, times=None):
    """Binary COPY tuples for (id int4, [ts timestamptz,] embedding vector) rows, as one bytes object.

    times, if given, holds one binary timestamptz (int64, see pg_microseconds) per row."""
    n, dim = vectors.shape
    fields = [("nfields", ">i2"), ("id_len", ">i4"), ("id", ">i4")]
    if times is not None:
        fields += [("ts_len", ">i4"), ("ts", ">i8")]
    fields += [("vec_len", ">i4"), ("dim", ">i2"), ("unused", ">i2"), ("values", ">f4", (dim,))]
    out = np.empty(n, dtype=np.dtype(fields))
    out["nfields"] = 2 if times is None else 3
    out["id_len"] = 4
    out["id"] = ids
    if times is not None:
        out["ts_len"] = 8
        out["ts"] = times
    out["vec_len"] = 4 + 4 * dim
    out["dim"] = dim
    out["unused"] = 0
    out["values"] = vectors
    return out.tobytes()


def copy_into(conn, table, ids, vectors, times=None, chunk=10_000, log=print):
    """COPY rows (ids[i], [times[i],] vectors[i]) into an existing table in one transaction."""
    n = vectors.shape[0]
    columns = "id, ts, embedding" if times is not None else "id, embedding"
    with conn.transaction():
        with conn.cursor() as cur:
            with cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT binary)") as copy:
                copy.write(COPY_SIGNATURE)
                for start in range(0, n, chunk):
                    block = np.asarray(vectors[start:start + chunk], dtype=np.float32)
                    stop = start + block.shape[0]
                    copy.write(copy_rows(ids[start:stop], block,
                                         None if times is None else times[start:stop]))
                    if log and start and (start // chunk) % 20 == 0:
                        log(f"  copied {start}/{n} rows")
                copy.write(COPY_TRAILER)


def load_table(conn, vectors, table="items", chunk=10_000, log=print, storage=None, table_options=None,
               times=None):
    """Drop and recreate `table`, COPY the vectors in (ids 0..n-1), add the primary key,
    VACUUM ANALYZE; return seconds taken. conn must be in autocommit mode.

    storage (plain | main | external | extended) overrides the column's storage
    strategy; None keeps the type's default.  table_options (e.g.
    "toast_tuple_target = 8160") go into CREATE TABLE ... WITH (...).  times
    (binary timestamptz per row) adds a column ts timestamptz."""
    n, dim = vectors.shape
    t0 = time.perf_counter()
    conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    with_clause = f" WITH ({table_options})" if table_options else ""
    ts_column = " ts timestamptz NOT NULL," if times is not None else ""
    conn.execute(f"CREATE TABLE {table} (id int NOT NULL,{ts_column} embedding vector({dim})){with_clause}")
    if storage:
        conn.execute(f"ALTER TABLE {table} ALTER COLUMN embedding SET STORAGE {storage}")
    copy_into(conn, table, np.arange(n), vectors, times, chunk, log)
    conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id)")
    conn.execute(f"VACUUM (ANALYZE) {table}")
    return time.perf_counter() - t0


def table_matches(conn, table, n, dim):
    """True when `table` exists with exactly ids 0..n-1 and vectors of `dim` dimensions."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    if not row[0]:
        return False
    count, low, high = conn.execute(f"SELECT count(*), min(id), max(id) FROM {table}").fetchone()
    if count != n or low != 0 or high != n - 1:
        return False
    dims = conn.execute(f"SELECT vector_dims(embedding) FROM {table} LIMIT 1").fetchone()
    return dims is not None and dims[0] == dim


def timed(conn, sql):
    """Execute one statement; return the seconds it took."""
    t0 = time.perf_counter()
    conn.execute(sql)
    return time.perf_counter() - t0


def prewarm(conn, relation):
    """Load a relation into shared buffers with pg_prewarm if available; return blocks or None."""
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        return conn.execute("SELECT pg_prewarm(%s::regclass)", (relation,)).fetchone()[0]
    except psycopg.Error:
        return None


class Vector:
    """A query vector in pgvector's binary wire format (int16 dim, int16 0, float4 BE)."""
    __slots__ = ("payload",)

    def __init__(self, values):
        values = np.asarray(values, dtype=">f4").ravel()
        self.payload = struct.pack(">hh", values.size, 0) + values.tobytes()


class _VectorBinaryDumper(Dumper):
    format = Format.BINARY

    def dump(self, obj):
        return obj.payload


def register_vector(conn):
    """Teach conn to send Vector objects as binary parameters of type vector."""
    oid = conn.execute("SELECT 'vector'::regtype::oid").fetchone()[0]
    dumper = type("VectorBinaryDumper", (_VectorBinaryDumper,), {"oid": oid})
    conn.adapters.register_dumper(Vector, dumper)


def knn_sql(metric="l2", k=10, table="items"):
    """The k-NN query text with one binary vector parameter."""
    return f"SELECT id FROM {table} ORDER BY embedding {OPERATORS[metric]} %b LIMIT {k}"


def backend_cpu_seconds(pid):
    """utime + stime of a process on this machine (a backend of a local server), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_queries(conn, queries, metric="l2", k=10, table="items", warmup=(), sql=None, cpu=None):
    """Run each query alone through one prepared statement (the k-NN query of knn_sql(), or sql
    with one vector parameter); return (ids, latencies in s).  With a dict as cpu, also store
    the CPU seconds the timed queries took in the backend (cpu["backend_s"], from /proc: a local
    server) and in this client's thread (cpu["client_s"]; the thread's, so that idle library threads
    spinning in the process, such as OpenBLAS's, do not count): on a shared machine CPU time is
    steadier than wall-clock time."""
    sql = sql or knn_sql(metric, k, table)
    params = [Vector(q) for q in queries]
    with conn.cursor(binary=True) as cur:
        for p in (Vector(q) for q in warmup):
            cur.execute(sql, (p,), prepare=True)
            cur.fetchall()
        ids = []
        latencies = np.empty(len(params))
        if cpu is not None:
            backend0, client0 = backend_cpu_seconds(conn.info.backend_pid), time.thread_time()
        for i, p in enumerate(params):
            t0 = time.perf_counter()
            cur.execute(sql, (p,), prepare=True)
            rows = cur.fetchall()
            latencies[i] = time.perf_counter() - t0
            ids.append([r[0] for r in rows])
        if cpu is not None:
            cpu["backend_s"] = backend_cpu_seconds(conn.info.backend_pid) - backend0
            cpu["client_s"] = time.thread_time() - client0
    return ids, latencies


def explain(conn, query, metric="l2", k=10, table="items"):
    """The plan (text) the prepared k-NN query gets for this query vector; the
    vector's literal is abbreviated to '[...]'."""
    with conn.cursor() as cur:
        cur.execute("EXPLAIN (COSTS OFF) " + knn_sql(metric, k, table), (Vector(query),))
        text = "\n".join(r[0] for r in cur.fetchall())
    return re.sub(r"'\[[^']*\]'::vector", "'[...]'::vector", text)


def plan_shape(plan):
    """The node types of an EXPLAIN (COSTS OFF) plan, top down, repeats counted:
    'Limit -> Merge Append -> 30 x Index Scan'."""
    nodes = []
    for i, line in enumerate(plan.splitlines()):
        text = line.strip()
        if text.startswith("->"):
            text = text[2:].strip()
        elif i:
            continue  # a property line (Sort Key, Order By, ...)
        node = text.split(" using ")[0].split(" on ")[0]
        if nodes and nodes[-1][0] == node:
            nodes[-1][1] += 1
        else:
            nodes.append([node, 1])
    return " -> ".join(node if count == 1 else f"{count} x {node}" for node, count in nodes)


def index_plan(conn, query, uses_index, metric="l2", k=10, table="items", log=print):
    """The k-NN plan for `table`, made to use the index: (plan text, notes).

    uses_index(plan) says whether a plan is the wanted one; when it is not,
    enable_seqscan is turned off for the rest of the session (and a note says
    so), and if the plan still is not, RuntimeError."""
    notes = []
    plan = explain(conn, query, metric, k, table)
    if not uses_index(plan):
        notes.append(f"planner did not choose the ivfpq index on {table} (its plan: {plan_shape(plan)}); "
                     "enable_seqscan set off for the sweep")
        if log:
            log(f"pg: WARNING: the planner did not choose the ivfpq index on {table}:\n" + plan)
        conn.execute("SET enable_seqscan = off")
        plan = explain(conn, query, metric, k, table)
        if not uses_index(plan):
            raise RuntimeError(f"the ivfpq index on {table} is not used even with enable_seqscan = off:\n" + plan)
    return plan, notes


def memory_contexts(conn, prefix="ivfpq"):
    """This backend's memory (pg_backend_memory_contexts): total bytes, and bytes and
    context counts of the contexts whose name starts with prefix, in total and per name."""
    rows = conn.execute(
        "SELECT name, count(*), sum(total_bytes)::bigint, sum(used_bytes)::bigint "
        "FROM pg_backend_memory_contexts GROUP BY name ORDER BY 3 DESC").fetchall()
    mine = {name: {"contexts": count, "total_bytes": total, "used_bytes": used}
            for name, count, total, used in rows if name and name.startswith(prefix)}
    return {"backend_total_bytes": sum(r[2] for r in rows),
            f"{prefix}_total_bytes": sum(c["total_bytes"] for c in mine.values()),
            f"{prefix}_contexts": mine}


def warmup_queries(ds, nq, warmup):
    """Warm-up query vectors: from outside the first nq measured ones when the set has enough."""
    return ds.queries[nq:nq + warmup] if ds.queries.shape[0] >= nq + warmup else ds.queries[:warmup]


def ensure_ivfpq(conn):
    """CREATE EXTENSION ivfpq if needed; exit when its access method is missing; register the vector dumper."""
    conn.execute("CREATE EXTENSION IF NOT EXISTS ivfpq")
    if not am_exists(conn):
        raise SystemExit("the ivfpq access method is not installed")
    register_vector(conn)


def am_exists(conn, name="ivfpq"):
    """True when the index access method is installed in this database."""
    return conn.execute("SELECT 1 FROM pg_am WHERE amname = %s", (name,)).fetchone() is not None


def latency_summary(latencies):
    """Mean / p50 / p99 latency in milliseconds and QPS of a latency array (seconds)."""
    ms = np.asarray(latencies) * 1000
    return {"mean_ms": float(ms.mean()), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "qps": float(len(ms) / (ms.sum() / 1000))}
