#!/usr/bin/python3
"""Postgres client helpers shared by the ivfpq benchmark and demo (psycopg 3).

- load_table: (re)create ``items (id int PRIMARY KEY, embedding vector(d))`` and
  fill it with a binary COPY whose rows are built with numpy (int32 id, then the
  vector's binary form: int16 dim, int16 0, float4 values, all big-endian);
- Vector + register_vector: send a query vector as a binary ``vector``
  parameter of a prepared statement;
- run_queries: issue k-NN queries one at a time and time each one.
"""

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


def copy_rows(ids, vectors):
    """Binary COPY tuples for (id int4, embedding vector) rows, as one bytes object."""
    n, dim = vectors.shape
    row = np.dtype([("nfields", ">i2"), ("id_len", ">i4"), ("id", ">i4"), ("vec_len", ">i4"),
                    ("dim", ">i2"), ("unused", ">i2"), ("values", ">f4", (dim,))])
    out = np.empty(n, dtype=row)
    out["nfields"] = 2
    out["id_len"] = 4
    out["id"] = ids
    out["vec_len"] = 4 + 4 * dim
    out["dim"] = dim
    out["unused"] = 0
    out["values"] = vectors
    return out.tobytes()


def load_table(conn, vectors, table="items", chunk=10_000, log=print, storage=None, table_options=None):
    """Drop and recreate `table`, COPY the vectors in (ids 0..n-1), add the primary key,
    VACUUM ANALYZE; return seconds taken. conn must be in autocommit mode.

    storage (plain | main | external | extended) overrides the column's storage
    strategy; None keeps the type's default.  table_options (e.g.
    "toast_tuple_target = 8160") go into CREATE TABLE ... WITH (...)."""
    n, dim = vectors.shape
    t0 = time.perf_counter()
    conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    with_clause = f" WITH ({table_options})" if table_options else ""
    conn.execute(f"CREATE TABLE {table} (id int NOT NULL, embedding vector({dim})){with_clause}")
    if storage:
        conn.execute(f"ALTER TABLE {table} ALTER COLUMN embedding SET STORAGE {storage}")
    with conn.transaction():
        with conn.cursor() as cur:
            with cur.copy(f"COPY {table} (id, embedding) FROM STDIN (FORMAT binary)") as copy:
                copy.write(COPY_SIGNATURE)
                for start in range(0, n, chunk):
                    block = np.asarray(vectors[start:start + chunk], dtype=np.float32)
                    copy.write(copy_rows(np.arange(start, start + block.shape[0]), block))
                    if log and start and (start // chunk) % 20 == 0:
                        log(f"  copied {start}/{n} rows")
                copy.write(COPY_TRAILER)
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


def run_queries(conn, queries, metric="l2", k=10, table="items", warmup=()):
    """Run each query alone through one prepared statement; return (ids, latencies in s)."""
    sql = knn_sql(metric, k, table)
    params = [Vector(q) for q in queries]
    with conn.cursor(binary=True) as cur:
        for p in (Vector(q) for q in warmup):
            cur.execute(sql, (p,), prepare=True)
            cur.fetchall()
        ids = []
        latencies = np.empty(len(params))
        for i, p in enumerate(params):
            t0 = time.perf_counter()
            cur.execute(sql, (p,), prepare=True)
            rows = cur.fetchall()
            latencies[i] = time.perf_counter() - t0
            ids.append([r[0] for r in rows])
    return ids, latencies


def explain(conn, query, metric="l2", k=10, table="items"):
    """The plan (text) the prepared k-NN query gets for this query vector."""
    with conn.cursor() as cur:
        cur.execute("EXPLAIN (COSTS OFF) " + knn_sql(metric, k, table), (Vector(query),))
        return "\n".join(r[0] for r in cur.fetchall())


def am_exists(conn, name="ivfpq"):
    """True when the index access method is installed in this database."""
    return conn.execute("SELECT 1 FROM pg_am WHERE amname = %s", (name,)).fetchone() is not None


def latency_summary(latencies):
    """Mean / p50 / p99 latency in milliseconds and QPS of a latency array (seconds)."""
    ms = np.asarray(latencies) * 1000
    return {"mean_ms": float(ms.mean()), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "qps": float(len(ms) / (ms.sum() / 1000))}
