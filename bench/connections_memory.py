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
figures show the budget holding and what a smaller one costs in QPS.

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


def measure_budget(dsn, table, queries, connections, cache_mb, session_sets, log=print):
    """Open `connections` backends with ivfpq.cache_mb = cache_mb, run every query in
    each, and return their memory and the QPS of the last round."""
    conns = []
    try:
        for _ in range(connections):
            c = psycopg.connect(dsn, autocommit=True)
            pgclient.register_vector(c)
            c.execute(f"SET ivfpq.cache_mb = {int(cache_mb)}")
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
    out = {"cache_mb": cache_mb, "connections": connections, "queries_per_connection": len(queries),
           "qps": count / elapsed if elapsed else None,
           "ivfpq_bytes_sum": float(ivfpq_bytes.sum()), "ivfpq_bytes_max": float(ivfpq_bytes.max()),
           "ivfpq_bytes_mean": float(ivfpq_bytes.mean()),
           "backend_total_bytes_sum": float(sum(b["backend_total_bytes"] for b in per_backend)),
           "rss_anon_bytes_sum": float(sum(rss)) if rss else None,
           "rss_anon_bytes_max": float(max(rss)) if rss else None,
           "within_budget": bool(ivfpq_bytes.max() <= cache_mb * MIB)}
    log(f"pg: {connections} connections, ivfpq.cache_mb = {cache_mb}: ivfpq contexts "
        f"{out['ivfpq_bytes_sum'] / MIB:.1f} MiB in all (max {out['ivfpq_bytes_max'] / MIB:.1f} MiB per backend), "
        + (f"RssAnon {out['rss_anon_bytes_sum'] / MIB:.1f} MiB in all, " if rss else "")
        + f"{out['qps']:.1f} QPS one at a time")
    return out


def measure(dsn, table, queries, connections, budgets, session_sets, log=print):
    """measure_budget for each cache budget; also an idle backend's RssAnon as the floor."""
    with psycopg.connect(dsn, autocommit=True) as idle:
        idle.execute("SELECT '[1]'::vector")
        pid = idle.execute("SELECT pg_backend_pid()").fetchone()[0]
        idle_rss = rss_anon_bytes(pid)
    return {"table": table, "idle_rss_anon_bytes": idle_rss, "session_sets": list(session_sets),
            "budgets": [measure_budget(dsn, table, queries, connections, b, session_sets, log)
                        for b in budgets]}


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
           "| ivfpq.cache_mb | connections | ivfpq contexts, all backends | max per backend | within budget "
           "| RssAnon, all backends | QPS (one at a time) |",
           "|---|---|---|---|---|---|---|"]
    for b in mem["budgets"]:
        rss = f"{b['rss_anon_bytes_sum'] / MIB:.0f} MiB" if b["rss_anon_bytes_sum"] else "n/a"
        out.append(f"| {b['cache_mb']} | {b['connections']} | {b['ivfpq_bytes_sum'] / MIB:.0f} MiB | "
                   f"{b['ivfpq_bytes_max'] / MIB:.1f} MiB | {'yes' if b['within_budget'] else 'NO'} | {rss} | "
                   f"{b['qps']:.1f} |")
    out.append("")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", default="parts", help="table (or partitioned parent) with id and embedding")
    ap.add_argument("--dataset", default="generated:900000", help="dataset whose queries are used")
    ap.add_argument("--connections", type=int, default=100)
    ap.add_argument("--budgets", default="256,16", help="ivfpq.cache_mb values, comma-separated")
    ap.add_argument("--queries", type=int, default=5, help="queries per connection")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="session settings")
    ap.add_argument("--dsn", default="")
    args = ap.parse_args(argv)
    queries = np.asarray(datasets.load(args.dataset).queries[:args.queries], dtype=np.float32)
    mem = measure(args.dsn, args.table, queries, args.connections,
                  [int(b) for b in args.budgets.split(",")], args.set,
                  log=lambda line: print(line, file=sys.stderr))
    print("\n".join(markdown(mem)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
