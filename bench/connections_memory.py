#!/usr/bin/python3
"""Memory of many connections that all query a partitioned table through ivfpq.

Opens N connections (default 100) to a cluster on this machine, has each run
the same k-NN queries over the parent (so each backend loads the quantizer of
every partition it scans), then measures every backend two ways:
  - ivfpq's own memory contexts (pg_backend_memory_contexts, asked by the
    backend itself), which ivfpq.cache_mb bounds;
  - the operating system's view: RssAnon of the backend process
    (/proc/<pid>/status; shared_buffers is shared memory and not counted).
It does this once per cache budget (ivfpq.cache_mb, set per session), so the
figures show the budget holding and what a smaller one costs in QPS, and
(--modes shared) with the quantizer cache shared by all backends (ivfpq
preloaded), whose use ivfpq_shared_cache_stats() reports, at each connection
count, so the figures show whether memory grows with connections.

Used by partitions_bench.py (--connections) and on its own against a loaded
table:
  python3 bench/connections_memory.py --table parts --dataset generated:900000 \
      --connections 100 --budgets 256,16 --set ivfpq.probes=4 --set ivfpq.rerank=10
The cluster must allow the connections (max_connections) and run on this
machine (the /proc figures need the backends' pids; run as root or as the
cluster's owner).
"""
import argparse
import os
import sys
import time

import numpy as np
import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import datasets  # noqa: E402
import pgclient  # noqa: E402

MIB = 1024 * 1024


def rss_anon_bytes(pid):
    """RssAnon of a process in bytes (private anonymous memory), or None if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def shared_cache_stats(dsn):
    """ivfpq_shared_cache_stats() as a dict, or None without a shared cache."""
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute("SELECT capacity_bytes, used_bytes, entries, evictions, refusals "
                        "FROM ivfpq_shared_cache_stats()").fetchone()
    if row is None:
        return None
    return dict(zip(("capacity_bytes", "used_bytes", "entries", "evictions", "refusals"), map(int, row)))


def measure_budget(dsn, table, queries, connections, cache_mb, session_sets, log=print, shared=False):
    """Open `connections` backends with ivfpq.cache_mb = cache_mb (and the shared
    quantizer cache on or off), run every query in each, and return their memory
    and the QPS of the last round."""
    conns = []
    try:
        for _ in range(connections):
            c = psycopg.connect(dsn, autocommit=True)
            pgclient.register_vector(c)
            c.execute(f"SET ivfpq.cache_mb = {int(cache_mb)}")
            c.execute(f"SET ivfpq.shared_cache = {'on' if shared else 'off'}")
            for item in session_sets:
                name, value = item.split("=", 1)
                c.execute(f"SELECT set_config(%s, %s, false)", (name, value))
            conns.append(c)
        # Each backend scans every partition at least once; time one round of all
        # connections, one query at a time (memory, not concurrency, is measured).
        elapsed, count = 0.0, 0
        for c in conns:
            t0 = time.perf_counter()
            pgclient.run_queries(c, queries, table=table)
            elapsed += time.perf_counter() - t0
            count += len(queries)
        per_backend = []
        for c in conns:
            pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
            mem = pgclient.memory_contexts(c)
            per_backend.append({"pid": pid, "ivfpq_bytes": mem["ivfpq_total_bytes"],
                                "backend_total_bytes": mem["backend_total_bytes"],
                                "rss_anon_bytes": rss_anon_bytes(pid)})
    finally:
        for c in conns:
            c.close()
    ivfpq_bytes = np.array([b["ivfpq_bytes"] for b in per_backend], dtype=np.float64)
    rss = [b["rss_anon_bytes"] for b in per_backend if b["rss_anon_bytes"] is not None]
    stats = shared_cache_stats(dsn) if shared else None
    out = {"cache_mb": cache_mb, "shared": shared, "shared_cache": stats,
           "connections": connections, "queries_per_connection": len(queries),
           "qps": count / elapsed if elapsed else None,
           "ivfpq_bytes_sum": float(ivfpq_bytes.sum()), "ivfpq_bytes_max": float(ivfpq_bytes.max()),
           "ivfpq_bytes_mean": float(ivfpq_bytes.mean()),
           "backend_total_bytes_sum": float(sum(b["backend_total_bytes"] for b in per_backend)),
           "rss_anon_bytes_sum": float(sum(rss)) if rss else None,
           "rss_anon_bytes_max": float(max(rss)) if rss else None,
           "within_budget": bool(ivfpq_bytes.max() <= cache_mb * MIB)}
    log(f"pg: {connections} connections, ivfpq.cache_mb = {cache_mb}, shared cache {'on' if shared else 'off'}: "
        + (f"shared cache {stats['used_bytes'] / MIB:.1f} MiB used of {stats['capacity_bytes'] / MIB:.0f}, "
           if stats else "")
        + f"ivfpq contexts "
        f"{out['ivfpq_bytes_sum'] / MIB:.1f} MiB in all (max {out['ivfpq_bytes_max'] / MIB:.1f} MiB per backend), "
        + (f"RssAnon {out['rss_anon_bytes_sum'] / MIB:.1f} MiB in all, " if rss else "")
        + f"{out['qps']:.1f} QPS one at a time")
    return out


def measure(dsn, table, queries, connections, budgets, session_sets, log=print, runs=None):
    """measure_budget for each cache budget (private caches), or for each
    (connections, cache_mb, shared) in runs; also an idle backend's RssAnon as
    the floor."""
    with psycopg.connect(dsn, autocommit=True) as idle:
        idle.execute("SELECT '[1]'::vector")
        pid = idle.execute("SELECT pg_backend_pid()").fetchone()[0]
        idle_rss = rss_anon_bytes(pid)
    if runs is None:
        runs = [(connections, b, False) for b in budgets]
    return {"table": table, "idle_rss_anon_bytes": idle_rss, "session_sets": list(session_sets),
            "budgets": [measure_budget(dsn, table, queries, n, b, session_sets, log, shared=sh)
                        for n, b, sh in runs]}


def markdown(mem):
    """A Markdown section for the results file."""
    if not mem:
        return []
    idle = mem["idle_rss_anon_bytes"]
    out = ["## Memory of many connections", "",
           f"Every connection runs the same {mem['budgets'][0]['queries_per_connection']} queries over "
           f"`{mem['table']}` ({', '.join(mem['session_sets']) or 'default settings'}), then each backend "
           "reports its ivfpq memory contexts (pg_backend_memory_contexts) and the OS its RssAnon "
           "(private memory; shared_buffers not included)"
           + (f"; an idle backend's RssAnon is {idle / MIB:.1f} MiB." if idle else "."), "",
           "| shared cache | ivfpq.cache_mb | connections | shared cache used | ivfpq contexts, all backends "
           "| max per backend | within budget | ivfpq memory in all (shared + contexts) "
           "| RssAnon, all backends | RssAnon above idle, per backend | QPS (one at a time) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for b in mem["budgets"]:
        rss = f"{b['rss_anon_bytes_sum'] / MIB:.0f} MiB" if b["rss_anon_bytes_sum"] else "n/a"
        above = (f"{(b['rss_anon_bytes_sum'] / b['connections'] - idle) / MIB:.1f} MiB"
                 if b["rss_anon_bytes_sum"] and idle else "n/a")
        stats = b.get("shared_cache")
        used = stats["used_bytes"] if stats else 0
        shared_col = (f"{used / MIB:.1f} of {stats['capacity_bytes'] / MIB:.0f} MiB, {stats['entries']} entries"
                      if stats else "-")
        out.append(f"| {'on' if b.get('shared') else 'off'} | {b['cache_mb']} | {b['connections']} | {shared_col} | "
                   f"{b['ivfpq_bytes_sum'] / MIB:.1f} MiB | "
                   f"{b['ivfpq_bytes_max'] / MIB:.2f} MiB | {'yes' if b['within_budget'] else 'NO'} | "
                   f"{(used + b['ivfpq_bytes_sum']) / MIB:.0f} MiB | {rss} | {above} | {b['qps']:.1f} |")
    out.append("")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", default="parts", help="table (or partitioned parent) with id and embedding")
    ap.add_argument("--dataset", default="generated:900000", help="dataset whose queries are used")
    ap.add_argument("--connections", default="100",
                    help="connections, comma-separated: each count is measured in every mode")
    ap.add_argument("--budgets", default="256,16", help="ivfpq.cache_mb values, comma-separated")
    ap.add_argument("--modes", default="private",
                    help="shared (the shared quantizer cache, ivfpq.cache_mb 256) and/or private "
                         "(each backend its own, at every --budgets value), comma-separated")
    ap.add_argument("--queries", type=int, default=5, help="queries per connection")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="session settings")
    ap.add_argument("--dsn", default="")
    args = ap.parse_args(argv)
    queries = np.asarray(datasets.load(args.dataset).queries[:args.queries], dtype=np.float32)
    budgets = [int(b) for b in args.budgets.split(",")]
    runs = []
    for n in (int(c) for c in args.connections.split(",")):
        for mode in args.modes.split(","):
            runs += [(n, 256, True)] if mode == "shared" else [(n, b, False) for b in budgets]
    mem = measure(args.dsn, args.table, queries, None, budgets, args.set,
                  log=lambda line: print(line, file=sys.stderr), runs=runs)
    print("\n".join(markdown(mem)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
