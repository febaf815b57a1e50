#!/usr/bin/python3
"""One server against a coordinator + 2 postgres_fdw shards (issue 10): QPS and
p50 / p99 latency at recall@10 >= 0.95, side by side in one run.

Steps (normally started by bench/shards.sh, which provides three clusters):
  1. shards: items (id bigint PRIMARY KEY, embedding vector(d)) on each;
  2. coordinator: the README's set-up ("More than one server"): postgres_fdw
     servers with extensions 'ivfpq', use_remote_estimate off, fetch_size 100,
     async_capable, connect_timeout 2 and options '-c ivfpq.probes=..
     -c ivfpq.rerank=..', user mappings, items PARTITION BY HASH (id) with one
     foreign partition per shard, and the fan-out function items_nearest(query, k);
  3. the rows: each id goes to the shard its hash partition names
     (satisfies_hash_partition on the coordinator), loaded by binary COPY
     straight into the shard; all rows also into items_all on the coordinator
     (the one-server side);
  4. CREATE INDEX ... USING ivfpq WITH (lists = ~sqrt(rows on that server))
     on items_all and on each shard;
  5. checks: the fan-out plan is an Append of Async Foreign Scans whose remote
     SQL carries ORDER BY <-> ... LIMIT; the plain query's plan on the
     partitioned table and on the view (PostgreSQL 15: a Merge Append of
     synchronous foreign scans, remote ORDER BY without LIMIT) is recorded;
     each shard's plan uses its index;
  6. sweep over probes (rerank fixed), interleaved per setting: SET on the
     one-server session, ALTER SERVER ... OPTIONS (SET options ...) for the
     shards, warm-up queries, then the queries one at a time on the one
     server, through items_nearest on the coordinator, as a plain ORDER BY
     <-> LIMIT k on the partitioned table and on the UNION ALL view
     items_union of the foreign tables (the issue's two layouts), and on
     shard 1 directly (its half of the rows, for reference); recall@10
     against exact ground truth;
  7. best QPS at recall >= 0.95 per side and the ratio; results in
     bench/results/shards-<dataset>-<date>.{md,json}.
"""

import argparse
import datetime
import json
import math
import os
import re
import shlex
import struct
import sys
import time

import numpy as np
import psycopg

import datasets
import ivfpq_bench
import pgclient
from ivfpq_bench import K, best_at, fmt, int_list, log

TARGET = 0.95


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=("generated", "siftlike"), help="generated (768 dims) | siftlike (128 dims)")
    ap.add_argument("--rows", type=int, default=200_000, help="rows in all (default %(default)s)")
    ap.add_argument("--coord", required=True, help="libpq conninfo of the coordinator")
    ap.add_argument("--shard", action="append", required=True, help="libpq conninfo of a shard (twice)")
    ap.add_argument("--probes", type=int_list, default=[8, 16, 32, 64, 128], help="ivfpq.probes values (default %(default)s)")
    ap.add_argument("--rerank", type=int, default=100, help="ivfpq.rerank (default %(default)s)")
    ap.add_argument("--m", type=int, help="PQ subquantizers (default: the index's)")
    ap.add_argument("--nqueries", type=int, default=200, help="queries per setting (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed queries per side before each setting")
    ap.add_argument("--results", help="output path without extension (default bench/results/shards-<dataset>-<date>)")
    return ap.parse_args(argv)


def copy_rows8(ids, vectors):
    """Binary COPY tuples for (id int8, embedding vector) rows."""
    n, dim = vectors.shape
    out = np.empty(n, dtype=np.dtype([("nfields", ">i2"), ("id_len", ">i4"), ("id", ">i8"), ("vec_len", ">i4"),
                                      ("dim", ">i2"), ("unused", ">i2"), ("values", ">f4", (dim,))]))
    out["nfields"], out["id_len"], out["id"] = 2, 8, ids
    out["vec_len"], out["dim"], out["unused"], out["values"] = 4 + 4 * dim, dim, 0, vectors
    return out.tobytes()


def load(conn, table, ids, base, chunk=10_000):
    """CREATE TABLE table (id bigint PRIMARY KEY, embedding vector(d)), binary COPY of base[ids], VACUUM ANALYZE."""
    t0 = time.perf_counter()
    conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    conn.execute(f"CREATE TABLE {table} (id bigint NOT NULL, embedding vector({base.shape[1]}))")
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(f"COPY {table} (id, embedding) FROM STDIN (FORMAT binary)") as copy:
            copy.write(pgclient.COPY_SIGNATURE)
            for s in range(0, len(ids), chunk):
                part = ids[s:s + chunk]
                copy.write(copy_rows8(part, np.asarray(base[part], dtype=np.float32)))
            copy.write(pgclient.COPY_TRAILER)
    conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id)")
    conn.execute(f"VACUUM (ANALYZE) {table}")
    return time.perf_counter() - t0


def build_index(conn, table, lists, m):
    opts = f"lists = {lists}" + (f", m = {m}" if m else "")
    sql = f"CREATE INDEX {table}_embedding_idx ON {table} USING ivfpq (embedding) WITH ({opts})"
    conn.execute("SET maintenance_work_mem = '1GB'")
    conn.execute("SET client_min_messages = warning")
    t0 = time.perf_counter()
    conn.execute(sql)
    secs = time.perf_counter() - t0
    size = conn.execute(f"SELECT pg_relation_size('{table}_embedding_idx')").fetchone()[0]
    tsize = conn.execute(f"SELECT pg_table_size('{table}')").fetchone()[0]
    log(f"  {sql}: {secs:.1f} s, index {size / 2**20:.1f} MiB, table {tsize / 2**20:.1f} MiB")
    return {"sql": sql, "build_s": secs, "index_bytes": size, "table_bytes": tsize}


def conninfo_params(dsn):
    return dict(re.findall(r"(\w+)=(\S+)", dsn))


def server_options(probes, rerank):
    return f"-c ivfpq.probes={probes} -c ivfpq.rerank={rerank}"


def coordinator_setup(conn, shard_dsns, dim, probes, rerank):
    """The README's coordinator SQL (test/t/008_shards.pl), one server per shard."""
    nshards = len(shard_dsns)
    sql = ["DROP FUNCTION IF EXISTS items_nearest(vector, int)", "DROP VIEW IF EXISTS items_union",
           "DROP TABLE IF EXISTS items CASCADE",
           "CREATE EXTENSION IF NOT EXISTS ivfpq", "CREATE EXTENSION IF NOT EXISTS postgres_fdw",
           f"CREATE TABLE items (id bigint NOT NULL, embedding vector({dim})) PARTITION BY HASH (id)"]
    for n, dsn in enumerate(shard_dsns, 1):
        port = conninfo_params(dsn)["port"]
        sql += [f"DROP SERVER IF EXISTS shard{n} CASCADE",
                f"""CREATE SERVER shard{n} FOREIGN DATA WRAPPER postgres_fdw
                    OPTIONS (host '127.0.0.1', port '{port}', dbname 'postgres',
                             extensions 'ivfpq', use_remote_estimate 'false', fetch_size '100',
                             async_capable 'true', connect_timeout '2',
                             options '{server_options(probes, rerank)}')""",
                f"CREATE USER MAPPING FOR CURRENT_USER SERVER shard{n} OPTIONS (user 'postgres')",
                f"""CREATE FOREIGN TABLE items_shard{n} PARTITION OF items
                    FOR VALUES WITH (MODULUS {nshards}, REMAINDER {n - 1})
                    SERVER shard{n} OPTIONS (table_name 'items')"""]
    # The other layout: the same foreign tables under a UNION ALL view.
    sql.append("CREATE VIEW items_union AS\n" + "\nUNION ALL\n".join(
        f"    SELECT id, embedding FROM items_shard{n}" for n in range(1, nshards + 1)))
    branches = "\n            UNION ALL\n".join(
        f"            (SELECT s.id, s.embedding <-> query AS distance FROM items_shard{n} s\n"
        f"             ORDER BY s.embedding <-> query LIMIT k)" for n in range(1, nshards + 1))
    sql.append(f"""CREATE FUNCTION items_nearest(query vector, k int DEFAULT 10)
        RETURNS TABLE (id bigint, distance float8)
        LANGUAGE sql STABLE AS $$
            WITH candidates AS MATERIALIZED (
{branches})
            SELECT c.id, c.distance FROM candidates c ORDER BY c.distance LIMIT k
        $$""")
    for s in sql:
        conn.execute(s)


def set_shard_options(coord, nshards, probes, rerank):
    for n in range(1, nshards + 1):
        coord.execute(f"ALTER SERVER shard{n} OPTIONS (SET options '{server_options(probes, rerank)}')")


def run(conn, sql, queries, warmup):
    """Each query alone through one prepared statement; (ids, latencies in s)."""
    return pgclient.run_queries(conn, queries, warmup=warmup, sql=sql)


def row_of(probes, rerank, ids, lat, truth):
    out = {"probes": probes, "rerank": rerank, **pgclient.latency_summary(lat)}
    out["recall@10"] = datasets.recall_at(ids, truth)
    return out


def main(argv=None):
    args = parse_args(argv)
    if len(args.shard) != 2:
        raise SystemExit("give --shard twice")
    t_start = time.perf_counter()
    ds = datasets.load(f"{args.dataset}:{args.rows}")
    nq = args.nqueries
    ds = datasets.Dataset(ds.name, ds.base, ds.queries[:nq + args.warmup], ds.cache_dir)
    truth = ds.ground_truth("l2")[:nq]
    queries, warm = ds.queries[:nq], ds.queries[nq:nq + args.warmup]
    n, dim = ds.base.shape
    log(f"dataset {ds.name}: {n} x {dim}, {nq} queries")

    coord = psycopg.connect(args.coord, autocommit=True)
    shards = [psycopg.connect(d, autocommit=True) for d in args.shard]
    for c in [coord] + shards:
        c.execute("CREATE EXTENSION IF NOT EXISTS ivfpq")
        pgclient.register_vector(c)
    environment = ivfpq_bench.machine_notes(coord)
    environment["wrapper"] = os.environ.get("IVFPQ_BENCH_WRAPPER")
    settings = ivfpq_bench.server_settings(coord)
    environment["shared_buffers"] = {"coordinator": coord.execute("SHOW shared_buffers").fetchone()[0],
                                     "shard": shards[0].execute("SHOW shared_buffers").fetchone()[0]}

    coordinator_setup(coord, args.shard, dim, args.probes[0], args.rerank)
    # Which shard each id belongs to, by the coordinator's own hash partitioning.
    placement = []
    for r in range(2):
        got = coord.execute("SELECT coalesce(array_agg(i ORDER BY i), '{}') FROM generate_series(0, %s) i "
                            "WHERE satisfies_hash_partition('items'::regclass, 2, %s, i::bigint)",
                            (n - 1, r)).fetchone()[0]
        placement.append(np.array(got, dtype=np.int64))
    assert sum(len(p) for p in placement) == n
    log(f"placement: {[len(p) for p in placement]} rows per shard")

    lists_single = max(1, round(math.sqrt(n)))
    build = {}
    log("loading items_all on the coordinator (one server)")
    build["one_server"] = {"rows": n, "lists": lists_single,
                           "load_s": load(coord, "items_all", np.arange(n, dtype=np.int64), ds.base)}
    build["one_server"].update(build_index(coord, "items_all", lists_single, args.m))
    for i, (c, ids) in enumerate(zip(shards, placement), 1):
        log(f"loading items on shard {i}")
        lists = max(1, round(math.sqrt(len(ids))))
        build[f"shard{i}"] = {"rows": len(ids), "lists": lists, "load_s": load(c, "items", ids, ds.base)}
        build[f"shard{i}"].update(build_index(c, "items", lists, args.m))
    coord.execute("ANALYZE items")
    for c in [coord] + shards:
        pgclient.prewarm(c, "items_all" if c is coord else "items")

    # Plans.
    notes = []
    qlit = "'" + "[" + ",".join(f"{x:.4f}" for x in queries[0]) + "]'"
    fan_plan = "\n".join(r[0] for r in coord.execute(
        f"EXPLAIN (VERBOSE, COSTS OFF) SELECT id FROM items_nearest({qlit}::vector, {K})"))
    fan_plan = re.sub(r"'\[[^']*\]'", "'[...]'", fan_plan)
    async_scans = fan_plan.count("Async Foreign Scan")
    limits = len(re.findall(r"Remote SQL: .*ORDER BY .*LIMIT", fan_plan))
    log(f"fan-out plan: {async_scans} Async Foreign Scans, {limits} remote ORDER BY ... LIMIT")
    if async_scans != 2 or limits != 2:
        notes.append("the fan-out plan is not 2 async foreign scans with ORDER BY ... LIMIT pushed down")
        log(fan_plan)
    plain_plans = {}
    for label, relation in (("partitioned", "items"), ("view", "items_union")):
        plan = "\n".join(r[0] for r in coord.execute(
            f"EXPLAIN (VERBOSE, COSTS OFF) SELECT id FROM {relation} ORDER BY embedding <-> {qlit}::vector LIMIT {K}"))
        plan = re.sub(r"'\[[^']*\]'", "'[...]'", plan)
        plain_plans[label] = plan
        remote = re.findall(r"Remote SQL: (.*)", plan)
        shape = {"merge_append": "Merge Append" in plan, "async_scans": plan.count("Async Foreign Scan"),
                 "remote_order_by": sum("ORDER BY" in r for r in remote),
                 "remote_limit": sum("LIMIT" in r for r in remote)}
        log(f"plain query on {relation}: {shape}")
        plain_plans[label + "_shape"] = shape
    one_plan = "\n".join(r[0] for r in coord.execute(
        f"EXPLAIN (COSTS OFF) SELECT id FROM items_all ORDER BY embedding <-> {qlit}::vector LIMIT {K}"))
    shard_plans = ["\n".join(r[0] for r in c.execute(
        f"EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY embedding <-> {qlit}::vector LIMIT {K}")) for c in shards]
    for label, plan in [("one server", one_plan)] + [(f"shard {i}", p) for i, p in enumerate(shard_plans, 1)]:
        if "embedding_idx" not in plan:
            notes.append(f"{label}: the planner did not use the ivfpq index")
            log(f"WARNING {label}: plan without the index:\n{plan}")

    one_sql = f"SELECT id FROM items_all ORDER BY embedding <-> %b LIMIT {K}"
    fan_sql = f"SELECT id FROM items_nearest(%b, {K})"
    shard_sql = f"SELECT id FROM items ORDER BY embedding <-> %b LIMIT {K}"
    part_sql = f"SELECT id FROM items ORDER BY embedding <-> %b LIMIT {K}"
    view_sql = f"SELECT id FROM items_union ORDER BY embedding <-> %b LIMIT {K}"
    rows = {"one_server": [], "shards": [], "partitioned": [], "view": [], "shard1_direct": []}
    t_sweep = time.perf_counter()
    for p in args.probes:
        coord.execute(f"SET ivfpq.probes = {p}")
        coord.execute(f"SET ivfpq.rerank = {args.rerank}")
        shards[0].execute(f"SET ivfpq.probes = {p}")
        shards[0].execute(f"SET ivfpq.rerank = {args.rerank}")
        set_shard_options(coord, 2, p, args.rerank)
        for label, conn, sql in (("one_server", coord, one_sql), ("shards", coord, fan_sql),
                                 ("partitioned", coord, part_sql), ("view", coord, view_sql),
                                 ("shard1_direct", shards[0], shard_sql)):
            ids, lat = run(conn, sql, queries, warm)
            r = row_of(p, args.rerank, ids, lat, truth)
            rows[label].append(r)
            log(f"{label:14s} probes {p:3d} rerank {args.rerank}  recall@10 {r['recall@10']:.3f}  "
                f"QPS {r['qps']:7.1f}  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms")
    sweep_s = time.perf_counter() - t_sweep

    best = {k: best_at(v, TARGET) for k, v in rows.items()}
    ratio = (best["shards"]["qps"] / best["one_server"]["qps"]) if best["shards"] and best["one_server"] else None
    environment["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result = {"dataset": {"name": ds.name, "rows": n, "dim": dim}, "nqueries": nq, "rerank": args.rerank,
              "environment": environment, "settings": settings, "build": build, "fanout_plan": fan_plan, "plain_plans": plain_plans,
              "shard_plan": shard_plans[0], "rows": rows, "best_at_0.95": best,
              "qps_ratio_shards_over_one": ratio, "notes": notes, "sweep_s": sweep_s,
              "total_s": time.perf_counter() - t_start}
    path = args.results or ivfpq_bench.default_results_path(ds.name, "shards-")
    ivfpq_bench.write_results(result, path, markdown(result), summary(result))
    for c in [coord] + shards:
        c.close()


def best_text(b):
    return "not reached" if not b else (f"{b['qps']:.1f} QPS, p50 {b['p50_ms']:.2f} ms, p99 {b['p99_ms']:.2f} ms "
                                        f"(probes {b['probes']}, recall {b['recall@10']:.3f})")


def summary(result):
    b = result["best_at_0.95"]
    r = result["qps_ratio_shards_over_one"]
    return [f"best at recall@10 >= {TARGET}: one server {best_text(b['one_server'])}",
            f"best at recall@10 >= {TARGET}: coordinator + 2 shards {best_text(b['shards'])}",
            f"best at recall@10 >= {TARGET}: plain ORDER BY ... LIMIT on the partitioned table "
            f"{best_text(b.get('partitioned'))}",
            f"best at recall@10 >= {TARGET}: plain ORDER BY ... LIMIT on the UNION ALL view {best_text(b.get('view'))}",
            f"QPS ratio shards / one server: {fmt(r, '.2f')}"]


def markdown(result):
    env, ds, bl = result["environment"], result["dataset"], result["build"]
    L = [f"# ivfpq: one server against a coordinator + 2 postgres_fdw shards: {ds['name']} ({ds['rows']} x {ds['dim']}, l2)",
         "", "```", env.get("wrapper") or env["command"], "```", "", "Python command:", "", "```", env["command"], "```", "",
         "## Machine and settings", "",
         f"- date: {env['date']}; run took {result['total_s']:.0f} s (sweep {result['sweep_s']:.0f} s)",
         f"- CPU: {env['cpu']}, {env['cores']} cores, shared by all three servers and the client; load average "
         f"at start {', '.join(map(str, env['load_average']))}, at the end {', '.join(map(str, env['load_average_end']))}",
         f"- {env['postgres']}; git {env['git']}",
         "- three clusters on this machine (bench/shards.sh): shard1, shard2, and the coordinator, which also "
         "holds the one-server table items_all and its index; shared_buffers "
         f"{env.get('shared_buffers', {}).get('shard', '1GB')} per shard, "
         f"{env.get('shared_buffers', {}).get('coordinator', '2GB')} on the coordinator; every table pg_prewarm'ed",
         f"- queries: {result['nqueries']} per setting and side, one at a time, prepared statement with a binary "
         "vector parameter; recall@10 against exact ground truth; settings interleaved (for each probes value: "
         "one server, then the fan-out" + (", the plain query on the partitioned table, on the view"
                                           if result["rows"].get("view") else "")
         + ", then shard 1 directly), 20 warm-up queries per side before each",
         f"- shards get ivfpq.probes / ivfpq.rerank through `ALTER SERVER shardN OPTIONS (SET options "
         f"'-c ivfpq.probes=P -c ivfpq.rerank={result['rerank']}')`; the one server through SET", ""]
    for n in result["notes"]:
        L.append(f"> {n}")
    L += ["## Summary", ""] + [f"- {s}" for s in summary(result)] + ["",
          "## Layout", "", "| server | rows | lists | load (COPY + PK + VACUUM ANALYZE) | CREATE INDEX | table | index |",
          "|---|---|---|---|---|---|---|"]
    for k, b in bl.items():
        L.append(f"| {k} | {b['rows']} | {b['lists']} | {b['load_s']:.1f} s | {b['build_s']:.1f} s | "
                 f"{b['table_bytes'] / 2**20:.0f} MiB | {b['index_bytes'] / 2**20:.1f} MiB |")
    L += ["", "## Sweep (rerank %d)" % result["rerank"], "",
          "| probes | one server recall | QPS | p50 ms | p99 ms | 2 shards recall | QPS | p50 ms | p99 ms | shard 1 alone recall | QPS | p50 ms | p99 ms |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for a, b, c in zip(result["rows"]["one_server"], result["rows"]["shards"], result["rows"]["shard1_direct"]):
        L.append(f"| {a['probes']} | " + " | ".join(
            f"{r['recall@10']:.3f} | {r['qps']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f}" for r in (a, b, c)) + " |")
    L += ["", "Shard 1 alone is recall against the global ground truth of a server holding half the rows "
          "(so about half the true neighbours are absent): its latency is the reference, not its recall."]
    if result["rows"].get("view"):
        L += ["", "## Plain ORDER BY ... LIMIT on the coordinator: partitioned table and UNION ALL view (rerank %d)"
              % result["rerank"], "",
              "`SELECT id FROM items ORDER BY embedding <-> $1 LIMIT 10` (foreign partitions) and the same on "
              "`items_union` (a UNION ALL view of the two foreign tables), next to the fan-out function.", "",
              "| probes | fan-out recall | QPS | p50 ms | p99 ms | partitioned recall | QPS | p50 ms | p99 ms | "
              "view recall | QPS | p50 ms | p99 ms |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for a, b, c in zip(result["rows"]["shards"], result["rows"]["partitioned"], result["rows"]["view"]):
            L.append(f"| {a['probes']} | " + " | ".join(
                f"{r['recall@10']:.3f} | {r['qps']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f}" for r in (a, b, c)) + " |")
    L += [
          "", "## Fan-out plan", "", "```", result["fanout_plan"], "```", "", "Shard plan:", "", "```",
          result["shard_plan"], "```", ""]
    if result.get("plain_plans"):
        L += ["## Plan of the plain query on the UNION ALL view", "", PLAIN_PLAN_NOTE, "", "```",
              result["plain_plans"]["view"], "```", ""]
    L += [WHAT_IT_SHOWS, "", EXTRAPOLATION, ""]
    return "\n".join(L)


PLAIN_PLAN_NOTE = """PostgreSQL 15 flattens the view into an append relation, like the partitioned table, and
plans both the same way: a Merge Append of synchronous foreign scans (the shards are asked one
after the other), each with the remote ORDER BY but without the LIMIT, so each shard's cursor
runs its index scan for a batch of fetch_size rows (100 here) instead of k; the LIMIT stays on the
coordinator. postgres_fdw pushes a LIMIT only when the foreign scan is the whole query, hence the
fan-out function (one LIMITed subquery per shard, under an Append that runs them asynchronously).
The plan of the partitioned table is the same apart from the relation names (test/t/008_shards.pl
asserts both)."""

WHAT_IT_SHOWS = """## What a 2-core machine can and cannot show

All three servers, the client and the coordinator's postgres_fdw connections share 2 cores.
The two shards are asked at once (async foreign scans), but each shard backend competes for
the same 2 cores with the coordinator backend and the client, so there is no parallel speed-up
to see: each shard searches half the rows (lists ~sqrt of its rows), which costs a bit less than
the one server's search, but the fan-out adds two libpq round trips, the remote planning of each
shard's query, shipping 2 x k rows with their vectors, and the coordinator's own planning and
merge. What this run does show: (1) the coordinator's overhead per query, the fan-out's latency
minus a shard's direct latency at the same setting; (2) that recall through the fan-out holds
at the same probes / rerank (each true neighbour lives on exactly one shard, whose own top-k
finds it as often as one server would). Note that the remote SQL is `SELECT id, embedding ...
ORDER BY embedding <-> q LIMIT k`: postgres_fdw ships each shard's k vectors (as text) and the
coordinator computes the distances again, a cost that grows with the dimensions. It cannot show the throughput of shards on separate
machines, nor how the fan-out's tail grows with many shards (the slowest shard sets each query's
latency). The replica read-scaling comparison (1 against 3 servers) is bench/replicas.sh."""

EXTRAPOLATION = """## Paper extrapolation to 10^9 rows x 768 dims (not measured)

Assumptions, from our 10M measurement (bench/results/scale-10m-shared-2026-12-02.md, one server
holding 10M rows): an index of 1.08 GiB for 10M x 768 at m = 96 (~116 bytes/row), a table of
~3.9 KB/row, warm p50 13.5 ms and p99 21.4 ms at probes 64 / rerank 200 with recall@10 0.957.
Shards of 10M rows each (the size we measured), so 100 shards, each on its own machine:

- storage per shard: ~1.1 GiB index + ~39 GB table; in all ~116 GB of index and ~3.9 TB of table
  (times the replicas). Warm means each shard's index and the table pages the rerank reads stay
  in its RAM: a 64 GB machine per shard.
- latency: every query goes to all 100 shards at once and waits for the slowest, so its latency
  is about a shard's p99 (~21 ms), not its p50, plus the coordinator's cost: here 8-11 ms over a
  shard's direct latency for 2 shards on a loaded 2-core machine (round trips, remote
  cursors, k vectors per shard shipped as text); with 100 shards the coordinator opens 100
  connections' cursors and parses 100 x k vectors per query, which this run cannot measure.
  Expect some 30-50 ms per query, not 13.5.
- recall: about the per-shard recall at the same probes / rerank (0.957 at 10M per shard), as
  this run shows for 2 shards (each true neighbour is on one shard, found there as often as on
  one server); lists stay ~sqrt(rows per shard).
- throughput: every query costs CPU on every shard, so the cluster's QPS is about one shard's
  QPS at 10M rows (cores per shard / CPU time per query), not 100 times it; more QPS needs
  replicas of each shard (read replicas, README), not more shards."""


if __name__ == "__main__":
    main()
