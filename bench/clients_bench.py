#!/usr/bin/python3
"""Query throughput with 1, 2 and 8 clients (issue 9, target 4), by pgbench.

Steps, on one cluster, in one run:
  1. the dataset's rows in table items (id, embedding) and its queries in
     bench_queries (qid, embedding); an ivfpq index WITH (lists, m);
  2. recall@10 of the measured setting (--probes, --rerank), one query at a
     time from Python against the exact top 10;
  3. pgbench (-n -M prepared, --seconds per run) with a custom script that
     picks a random query and runs
         SELECT id FROM items ORDER BY embedding <-> (SELECT embedding FROM
         bench_queries WHERE qid = :q) LIMIT 10
     at every client count (--clients, one pgbench thread per client), for
     each configuration: the shared quantizer cache (ivfpq preloaded) and
     private caches (ivfpq.shared_cache = off); plus one client that opens a
     new connection for every query (pgbench -C), where a private cache reads
     the quantizer again each time; in --rounds rounds, the configurations
     interleaved within each round; figures are the medians of the rounds;
  4. printed, and written to bench/results/clients-<dataset>-<date>.{md,json}
     (--results overrides).

    bash bench/clients.sh                                     # Fashion-MNIST
    bash bench/clients.sh generated:200000 --lists 450 --m 96
    bash bench/clients.sh fashion-mnist --seconds 3 --rounds 1  # smoke run

Connection: --dsn or the libpq environment; normally started by
bench/clients.sh on a throwaway cluster that preloads ivfpq.
"""
import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

import numpy as np
import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import datasets  # noqa: E402
import ivfpq_bench  # noqa: E402
import pgclient  # noqa: E402

SCRIPT = """\\set q random(0, {last})
SELECT id FROM items ORDER BY embedding <-> (SELECT embedding FROM bench_queries WHERE qid = :q) LIMIT 10;
"""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def pgbench(script, clients, seconds, options, connect_each=False):
    """Run pgbench; return (tps without connection time or with it for -C, mean latency ms)."""
    env = dict(os.environ, PGOPTIONS=" ".join(f"-c {k}={v}" for k, v in options.items()))
    cmd = ["pgbench", "-n", "-M", "prepared", "-T", str(seconds), "-c", str(clients), "-j", str(clients),
           "-f", script]
    if connect_each:
        cmd.insert(1, "-C")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"pgbench failed: {out.stderr.strip()[-500:]}")
    # -C: count connection time as part of each query (what a client sees).
    pattern = r"tps = ([0-9.]+) \((including|without)" if connect_each else r"tps = ([0-9.]+) \(without"
    tps = [float(m.group(1)) for m in re.finditer(pattern, out.stdout)]
    latency = re.search(r"latency average = ([0-9.]+) ms", out.stdout)
    if not tps:
        raise RuntimeError(f"no tps in pgbench output: {out.stdout[-500:]}")
    return tps[0], float(latency.group(1)) if latency else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", nargs="?", default="fashion-mnist")
    ap.add_argument("--lists", type=int, default=256)
    ap.add_argument("--m", type=int, default=56)
    ap.add_argument("--probes", type=int, default=10)
    ap.add_argument("--rerank", type=int, default=100)
    ap.add_argument("--clients", default="1,2,8")
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--nqueries", type=int, default=1000)
    ap.add_argument("--dsn", default="")
    ap.add_argument("--results", default=None)
    args = ap.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",")]

    ds = datasets.load(args.dataset).limit(nqueries=args.nqueries)
    truth = ds.ground_truth("l2")
    conn = psycopg.connect(args.dsn, autocommit=True)
    pgclient.ensure_ivfpq(conn)
    pgclient.register_vector(conn)
    environment = ivfpq_bench.machine_notes(conn)
    preload = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
    if "ivfpq" not in preload:
        log("note: ivfpq is not preloaded: the shared-cache configuration runs with private caches")
    log(f"pg: loading {ds.name} ({ds.base.shape[0]} x {ds.dim}) and {len(ds.queries)} queries")
    pgclient.load_table(conn, ds.base, "items", log=log)
    pgclient.load_table(conn, ds.queries, "bench_queries", log=log)
    conn.execute("ALTER TABLE bench_queries RENAME COLUMN id TO qid")
    conn.execute("SET maintenance_work_mem = '2GB'")
    conn.execute(f"CREATE INDEX items_ivfpq ON items USING ivfpq (embedding) WITH (lists = {args.lists}, m = {args.m})")
    conn.execute("ANALYZE items")

    settings = {"ivfpq.probes": args.probes, "ivfpq.rerank": args.rerank, "enable_seqscan": "off"}
    for k, v in settings.items():
        conn.execute(f"SELECT set_config(%s, %s, false)", (k, str(v)))
    plan = "\n".join(r[0] for r in conn.execute(
        "EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY embedding <-> "
        "(SELECT embedding FROM bench_queries WHERE qid = 0) LIMIT 10").fetchall())
    if "items_ivfpq" not in plan:
        raise RuntimeError(f"the pgbench query does not use the index:\n{plan}")
    ids, _ = pgclient.run_queries(conn, ds.queries)
    recall = datasets.recall_at(ids, truth)
    log(f"pg: recall@10 {recall:.3f} at probes {args.probes} rerank {args.rerank}")

    configs = [("shared cache", {"ivfpq.shared_cache": "on"}),
               ("private caches", {"ivfpq.shared_cache": "off"})]
    runs = [(name, opts, c, False) for c in clients for name, opts in configs]
    runs += [(name, opts, 1, True) for name, opts in configs]
    figures = {}
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(SCRIPT.format(last=len(ds.queries) - 1))
        script = f.name
    os.chmod(script, 0o644)
    try:
        for r in range(args.rounds):
            for name, opts, c, each in runs:
                tps, lat = pgbench(script, c, args.seconds, {**settings, **opts}, connect_each=each)
                figures.setdefault((name, c, each), []).append((tps, lat))
                log(f"round {r + 1}: {name}, {c} client(s){' (new connection per query)' if each else ''}: "
                    f"{tps:.1f} QPS, {lat:.2f} ms mean")
    finally:
        os.unlink(script)

    rows = []
    for (name, c, each), values in figures.items():
        rows.append({"config": name, "clients": c, "connect_each": each,
                     "qps": statistics.median(v[0] for v in values),
                     "latency_ms": statistics.median(v[1] for v in values if v[1] is not None),
                     "rounds": [v[0] for v in values]})
    base = {r["config"]: r["qps"] for r in rows if r["clients"] == 1 and not r["connect_each"]}
    date = datetime.date.today().isoformat()
    results = args.results or os.path.join(HERE, "results", f"clients-{ds.name.replace(':', '-')}-{date}")
    cmd = "bash bench/clients.sh " + " ".join(argv if argv is not None else sys.argv[1:])
    md = [f"# Query throughput by clients: {ds.name}", "",
          f"Command: `{cmd}` ({datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}, "
          f"load {' '.join(open('/proc/loadavg').read().split()[:3])}, {os.cpu_count()} cores)", "",
          f"- {ds.base.shape[0]} rows x {ds.dim}, index WITH (lists = {args.lists}, m = {args.m}); "
          f"probes {args.probes}, rerank {args.rerank}: recall@10 {recall:.3f} ({len(ds.queries)} queries)",
          f"- pgbench -M prepared, {args.seconds} s per run, {args.rounds} rounds (configurations interleaved; "
          "medians); one pgbench thread per client; random query per transaction; "
          f"shared_preload_libraries = '{preload}'",
          "- QPS excludes connection set-up, except with a new connection per query (pgbench -C), where "
          "each query pays for its connection (and, with private caches, for reading the quantizer)", "",
          "| configuration | clients | QPS | vs 1 client | mean latency ms | QPS per round |",
          "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["connect_each"], r["config"], r["clients"])):
        scale = "" if r["connect_each"] else f"{r['qps'] / base[r['config']]:.2f}x"
        label = f"{r['clients']} (new connection per query)" if r["connect_each"] else str(r["clients"])
        md.append(f"| {r['config']} | {label} | {r['qps']:.1f} | {scale} | {r['latency_ms']:.2f} | "
                  f"{', '.join(f'{q:.0f}' for q in r['rounds'])} |")
    md.append("")
    text = "\n".join(md)
    print(text)
    os.makedirs(os.path.dirname(results), exist_ok=True)
    with open(results + ".md", "w") as f:
        f.write(text)
    with open(results + ".json", "w") as f:
        json.dump({"command": cmd, "dataset": ds.name, "recall@10": recall, "rows": rows,
                   "settings": settings, "preload": preload, "environment": environment}, f, indent=1, default=str)
    log(f"results: {results}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
