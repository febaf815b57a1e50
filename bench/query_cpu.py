#!/usr/bin/python3
"""Where a query's CPU goes between the server and the client: per (probes,
rerank) setting, the backend's CPU time per query (/proc, a local server) and
this Python client's (psycopg: binding, protocol, result parsing), queries one
at a time through a prepared statement as in ivfpq_bench; and the same for a
trivial query with one vector parameter (the fixed cost of a round trip).
Compare with FAISS's CPU per query in ivfpq_bench's "CPU QPS" columns.

  IVFPQ_BENCH_SCRIPT=query_cpu.py bash bench/run.sh siftlike:200000 --lists 400 --m 16 \\
      --settings 16/20,32/50,64/100 --results bench/results/query-cpu-siftlike-200000
"""
import argparse
import time

import pgclient
from ivfpq_bench import create_index, default_results_path, log, write_results
from nbits_ab import open_ab


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("--lists", type=int, default=400)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--settings", default="16/20,32/50,64/100", help="probes/rerank pairs")
    ap.add_argument("--nqueries", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--results", help="output path without extension")
    args = ap.parse_args()
    ds, nq, queries, spare, truth, conn = open_ab(args)
    pgclient.load_table(conn, ds.base, table="items", log=lambda *a: None)
    pgclient.prewarm(conn, "items")
    build_s, size, _, sql = create_index(conn, "l2", f"lists = {args.lists}, m = {args.m}", "2GB",
                                         table="items", index="items_ivfpq", verbose=False)
    pgclient.prewarm(conn, "items_ivfpq")
    cases = [(f"probes {p} / rerank {r}", f"SET ivfpq.probes = {p}; SET ivfpq.rerank = {r}", None)
             for p, r in (s.split("/") for s in args.settings.split(","))]
    cases.append(("trivial query (one row by id, the vector parameter unused)", None,
                  "SELECT id FROM items WHERE id = 1 AND %s::vector IS NOT NULL"))
    rows = []
    for name, setup, query_sql in cases:
        if setup:
            for statement in setup.split(";"):
                conn.execute(statement)
        backend, client = [], []
        for _ in range(args.rounds):
            cpu = {}
            pgclient.run_queries(conn, queries, "l2", 10, "items", warmup=spare, sql=query_sql, cpu=cpu)
            backend.append(1e6 * cpu["backend_s"] / nq)
            client.append(1e6 * cpu["client_s"] / nq)
        row = {"case": name, "backend_us": sorted(backend)[len(backend) // 2],
               "client_us": sorted(client)[len(client) // 2], "backend_rounds": backend, "client_rounds": client}
        rows.append(row)
        log(f"{name}: backend {row['backend_us']:.0f} us, client {row['client_us']:.0f} us per query")
    lines = [f"# CPU per query, server and client: {ds.name} ({ds.base.shape[0]} x {ds.dim}), {nq} queries", "",
             f"- {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, median of {args.rounds} rounds",
             f"- `{sql}` ({build_s:.1f} s, {size / 2**20:.1f} MiB)", "",
             "| case | backend CPU µs / query | client CPU µs / query | together |", "|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['backend_us']:.0f} | {r['client_us']:.0f} | {r['backend_us'] + r['client_us']:.0f} |"
              for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    path = args.results or default_results_path(ds.name, prefix="query-cpu-")
    write_results({"args": vars(args), "sql": sql, "rows": rows},
                  path, text, [])


if __name__ == "__main__":
    main()
