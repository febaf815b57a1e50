#!/usr/bin/python3
"""Cold starts with and without huge pages (issue 9, target 3), on a table that
bench/scale.sh kept (`bash bench/scale.sh --sizes 10000000 ... --keep-table`).

Why: bench/scale.sh's cold passes showed that at 10M rows the slow queries after a restart are
not the heap reads (I/O read time 6 ms of a 150 ms query) but the first ~30 queries of every new
connection, warm server or not: a backend takes a page fault for each 4 kB page of shared memory it
touches the first time (shared buffers, the shared quantizer cache), and a 10M-row query touches
~30 MB of index pages. With huge pages (huge_pages = on, vm.nr_hugepages reserved) it touches 2 MB
pages instead.

For each --rounds, for huge_pages off then on (interleaved):
  - cold heap, warm index: the server restarted with that setting, the kernel's page cache
    dropped, the index loaded with pg_prewarm, one untimed query, then the --queries queries of
    bench/scale_bench.py (the same generated set) one at a time: p50 / p99, first 30 apart;
  - new connection on a warm server: right after, a new connection runs the same queries: p50 /
    p99 and its first 30.
Recall is not measured here (same index, queries and settings as the scale run whose results
give it); the ids of both settings are compared instead.

    bash bench/cold_start.sh --probes 64 --rerank 150      # see there for the cluster

Needs root (drops the page cache) and vm.nr_hugepages >= the server's shared_memory_size_in_huge_pages
(the wrapper reserves them for the run and gives them back).
"""

import argparse
import datetime
import os
import sys
import time

import numpy as np
import psycopg

import datasets
import ivfpq_bench
import pgclient
from ivfpq_bench import K, log
from scale_bench import drop_page_cache, pg_ctl

TABLE, INDEX = "scale_items", "scale_items_ivfpq"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probes", type=int, default=64)
    ap.add_argument("--rerank", type=int, default=150)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--results", help="output path; default bench/results/cold-start-<date>")
    return ap.parse_args(argv)


def meminfo(field):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def restart(huge_pages, needed):
    pg_ctl("-m", "fast", "-w", "stop")
    drop_page_cache()
    # Other servers started meanwhile with huge_pages = try may have taken some of the pool.
    free = meminfo("HugePages_Free")
    if huge_pages == "on" and free < needed:
        with open("/proc/sys/vm/nr_hugepages", "w") as f:
            f.write(f"{meminfo('HugePages_Total') + needed - free + 16}\n")
    pg_ctl("-w", "-o", f"-c huge_pages={huge_pages}", "start")


def connect(args):
    conn = psycopg.connect(autocommit=True)
    pgclient.register_vector(conn)
    conn.execute(f"SET ivfpq.probes = {args.probes}")
    conn.execute(f"SET ivfpq.rerank = {args.rerank}")
    conn.execute("SET enable_seqscan = off")
    return conn


def summary(ids, lat):
    ms = np.asarray(lat) * 1000
    return {**pgclient.latency_summary(lat), "first30_max_ms": float(ms[:30].max()),
            "p99_after_30_ms": float(np.percentile(ms[30:], 99)), "latencies_ms": [round(float(x), 3) for x in ms],
            "ids": ids}


def one_round(args, huge_pages, queries, warmup, needed):
    restart(huge_pages, needed)
    conn = connect(args)
    shown = conn.execute("SHOW huge_pages").fetchone()[0]
    t0 = time.perf_counter()
    blocks = pgclient.prewarm(conn, INDEX)
    prewarm_s = time.perf_counter() - t0
    pgclient.run_queries(conn, [], "l2", K, TABLE, warmup=warmup)
    cold = summary(*pgclient.run_queries(conn, queries, "l2", K, TABLE))
    conn.close()
    conn = connect(args)
    fresh = summary(*pgclient.run_queries(conn, queries, "l2", K, TABLE))
    conn.close()
    log(f"huge_pages {shown}: cold heap p50 {cold['p50_ms']:.2f} p99 {cold['p99_ms']:.2f} ms (first 30 max "
        f"{cold['first30_max_ms']:.1f}); new connection, warm server p50 {fresh['p50_ms']:.2f} p99 "
        f"{fresh['p99_ms']:.2f} ms (first 30 max {fresh['first30_max_ms']:.1f})")
    return {"huge_pages": shown, "prewarm_blocks": blocks, "prewarm_s": prewarm_s, "cold_heap": cold,
            "new_connection": fresh}


def markdown(result, args):
    lines = [f"# Cold starts with and without huge pages: {TABLE}, {result['rows']} rows", "", "```",
             result["command"], "```", "", "## Machine and settings", "",
             f"- date: {result['date']}; load average at start {result['load_average']}, at the end "
             f"{result['load_average_end']}",
             f"- {result['cpu']}; {result['server']}",
             f"- the table and index of a kept bench/scale.sh run ({result['index']}); probes {args.probes}, "
             f"rerank {args.rerank}; {len(result['rounds'][0]['cold_heap']['latencies_ms'])} queries one at "
             "a time (the generated query set of bench/scale_bench.py)",
             "- cold heap, warm index: server restarted with the setting, page cache dropped, the index "
             "prewarmed (pg_prewarm), one untimed query, then the queries; new connection: right after, "
             "a second connection runs the same queries on the now warm server",
             f"- huge pages: vm.nr_hugepages {result['nr_hugepages']} (2 MB) reserved for the run; the server "
             f"needs {result['huge_pages_needed']}",
             f"- answers: the ids were {'identical' if result['same_ids'] else 'NOT identical'} across settings "
             "and rounds", "",
             "| round | huge_pages | cold heap p50 / p99 ms | first 30: max ms | p99 after the first 30 ms "
             "| new connection p50 / p99 ms | its first 30: max ms |",
             "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(result["rounds"]):
        c, f = r["cold_heap"], r["new_connection"]
        lines.append(f"| {i // 2 + 1} | {r['huge_pages']} | {c['p50_ms']:.2f} / {c['p99_ms']:.2f} | "
                     f"{c['first30_max_ms']:.1f} | {c['p99_after_30_ms']:.2f} | {f['p50_ms']:.2f} / "
                     f"{f['p99_ms']:.2f} | {f['first30_max_ms']:.1f} |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    params = datasets.GeneratedParams()
    model = datasets.GeneratedModel(params)
    all_queries = model.sample(datasets.GEN_CHUNK, np.random.default_rng([params.seed, 2, 0]))
    queries, warmup = all_queries[:args.queries], all_queries[args.queries:args.queries + 1]
    with psycopg.connect(autocommit=True) as conn:
        rows = conn.execute(f"SELECT reltuples::bigint FROM pg_class WHERE relname = '{TABLE}'").fetchone()[0]
        index = f"{INDEX}: " + ", ".join(f"{k} {v}" for k, v in ivfpq_bench.index_stats(conn, INDEX).items()
                                         if k in ("lists", "m", "rows", "pages"))
        server = conn.execute("SELECT version()").fetchone()[0]
        needed = int(conn.execute("SHOW shared_memory_size_in_huge_pages").fetchone()[0])
    with open("/proc/sys/vm/nr_hugepages") as f:
        nr = int(f.read())
    result = {"command": os.environ.get("IVFPQ_COLD_START_COMMAND") or " ".join([sys.executable] + sys.argv),
              "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "load_average": [round(x, 2) for x in os.getloadavg()], "cpu": ivfpq_bench.cpu_model(),
              "server": server, "rows": rows, "index": index, "nr_hugepages": nr, "huge_pages_needed": needed,
              "args": vars(args), "rounds": []}
    for _ in range(args.rounds):
        for setting in ("off", "on"):
            result["rounds"].append(one_round(args, setting, queries, warmup, needed))
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    first = result["rounds"][0]["cold_heap"]["ids"]
    result["same_ids"] = all(r[p]["ids"] == first for r in result["rounds"] for p in ("cold_heap", "new_connection"))
    path = args.results or os.path.join(ivfpq_bench.HERE, "results", f"cold-start-{datetime.date.today()}")
    summary_lines = [f"huge_pages {r['huge_pages']}: cold heap p50 {r['cold_heap']['p50_ms']:.2f} p99 "
                     f"{r['cold_heap']['p99_ms']:.2f} ms; new connection p99 {r['new_connection']['p99_ms']:.2f} ms"
                     for r in result["rounds"]]
    ivfpq_bench.write_results(result, path, markdown(result, args), summary_lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
