#!/usr/bin/python3
"""8-bit against 4-bit (fast-scan) ivfpq codes, interleaved in one cluster.

The same rows go into two tables, items8 and items4, each with its own ivfpq
index (WITH (lists, m = M8) and WITH (lists, m = M4, nbits = 4)); then, for
--rounds rounds, every (probes, rerank) setting runs the queries on one side
and at once on the other (the order alternating between rounds), so machine
noise hits both sides of a ratio alike.  Reports per side the median QPS and
recall@10 of every setting, the best median QPS at recall@10 0.95 / 0.98 /
0.99 and the ratio 4-bit / 8-bit; writes results/<name>.{md,json}.  Besides
wall-clock QPS it reads the backend's CPU time (/proc/<pid>/stat, same
machine) around each setting: on a machine shared with other jobs, CPU
seconds per query are far steadier than wall-clock QPS ("CPU QPS" = queries
per backend CPU second).

  bash bench/run.sh siftlike:156000 ...   (IVFPQ_BENCH_SCRIPT=nbits_ab.py)
  IVFPQ_BENCH_SCRIPT=nbits_ab.py bash bench/run.sh siftlike:156000 --lists 400 --m8 16 --m4 32
"""
import argparse
import statistics
import time

import numpy as np
import psycopg

import datasets
import pgclient
from pgclient import backend_cpu_seconds
from ivfpq_bench import create_index, default_results_path, int_list, log, measure, write_results

TARGETS = (0.95, 0.98, 0.99)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("--lists", type=int, default=400)
    ap.add_argument("--m8", type=int, default=16, help="sub-quantizers of the 8-bit index (= code bytes)")
    ap.add_argument("--m4", type=int, default=32, help="sub-quantizers of the 4-bit index (code bytes = m4 / 2)")
    ap.add_argument("--probes", type=int_list, default=[32, 48, 64, 96])
    ap.add_argument("--rerank", type=int_list, default=[50, 100, 200, 300])
    ap.add_argument("--nqueries", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--results", help="output path without extension")
    return ap.parse_args()


def best_at(rows, target, key="qps"):
    ok = [r for r in rows if r["recall@10"] >= target]
    return max(ok, key=lambda r: r[key]) if ok else None


def open_ab(args):
    """What an interleaved A/B benchmark starts from: the dataset, its first
    --nqueries queries, --warmup spare ones, their ground truth (L2) and a
    connection (autocommit, libpq environment) with the extension created.
    Returns (ds, nq, queries, spare, truth, conn)."""
    ds = datasets.load(args.dataset)
    nq = min(args.nqueries, ds.queries.shape[0])
    queries = np.asarray(ds.queries[:nq], dtype=np.float32)
    spare = pgclient.warmup_queries(ds, nq, args.warmup)
    truth = ds.ground_truth("l2")[:nq]
    conn = psycopg.connect(autocommit=True)
    conn.execute("CREATE EXTENSION IF NOT EXISTS ivfpq")
    pgclient.register_vector(conn)
    return ds, nq, queries, spare, truth, conn


def main():
    args = parse_args()
    ds, nq, queries, spare, truth, conn = open_ab(args)

    sides = {"8-bit": ("items8", f"lists = {args.lists}, m = {args.m8}"),
             "4-bit": ("items4", f"lists = {args.lists}, m = {args.m4}, nbits = 4")}
    built = {}
    for name, (table, options) in sides.items():
        pgclient.load_table(conn, ds.base, table=table, log=lambda *a: None)
        pgclient.prewarm(conn, table)
        seconds, size, _, sql = create_index(conn, "l2", options, "2GB", table=table, index=f"{table}_ivfpq",
                                             verbose=False)
        pgclient.prewarm(conn, f"{table}_ivfpq")
        built[name] = {"build_s": seconds, "index_bytes": size, "sql": sql}
        log(f"{name}: {sql}: {seconds:.1f} s, {size / 2**20:.1f} MiB")

    settings = [(p, r) for p in args.probes for r in args.rerank if p <= args.lists]
    samples = {name: {s: [] for s in settings} for name in sides}
    cpu = {name: {s: [] for s in settings} for name in sides}
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    recalls = {name: {} for name in sides}
    for round_ in range(args.rounds):
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        for p, r in settings:
            for name in order:
                table = sides[name][0]
                conn.execute(f"SET ivfpq.probes = {p}")
                conn.execute(f"SET ivfpq.rerank = {r}")
                before = backend_cpu_seconds(pid)
                row = measure(conn, queries, truth, "l2", spare, table=table)
                cpu[name][(p, r)].append((nq + len(spare)) / max(backend_cpu_seconds(pid) - before, 1e-3))
                samples[name][(p, r)].append(row["qps"])
                recalls[name][(p, r)] = row["recall@10"]
            log(f"round {round_ + 1} probes {p:3d} rerank {r:4d}: " + "  ".join(
                f"{n} recall {recalls[n][(p, r)]:.3f} QPS {samples[n][(p, r)][-1]:7.1f} "
                f"CPU QPS {cpu[n][(p, r)][-1]:7.1f}" for n in sides))

    rows = {name: [{"probes": p, "rerank": r, "recall@10": recalls[name][(p, r)],
                    "qps": statistics.median(samples[name][(p, r)]), "qps_rounds": samples[name][(p, r)],
                    "cpu_qps": statistics.median(cpu[name][(p, r)]), "cpu_qps_rounds": cpu[name][(p, r)]}
                   for p, r in settings] for name in sides}
    lines = [f"# ivfpq 8-bit against 4-bit codes, {ds.name} ({ds.base.shape[0]} x {ds.dim}), {nq} queries",
             "", f"- {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.rounds} interleaved rounds, median QPS",
             f"- 8-bit: `{built['8-bit']['sql']}` ({built['8-bit']['build_s']:.1f} s, "
             f"{built['8-bit']['index_bytes'] / 2**20:.1f} MiB)",
             f"- 4-bit: `{built['4-bit']['sql']}` ({built['4-bit']['build_s']:.1f} s, "
             f"{built['4-bit']['index_bytes'] / 2**20:.1f} MiB)", "",
             "| probes | rerank | 8-bit recall@10 | 8-bit QPS | 8-bit CPU QPS | 4-bit recall@10 | 4-bit QPS | 4-bit CPU QPS |",
             "|---|---|---|---|---|---|---|---|"]
    for a, b in zip(rows["8-bit"], rows["4-bit"]):
        lines.append(f"| {a['probes']} | {a['rerank']} | {a['recall@10']:.3f} | {a['qps']:.1f} | {a['cpu_qps']:.1f} | "
                     f"{b['recall@10']:.3f} | {b['qps']:.1f} | {b['cpu_qps']:.1f} |")
    summary = {}
    for key, label in (("qps", "QPS"), ("cpu_qps", "CPU QPS")):
        lines += ["", f"| recall@10 >= | 8-bit best {label} (setting) | 4-bit best {label} (setting) | 4-bit / 8-bit |",
                  "|---|---|---|---|"]
        for t in TARGETS:
            a, b = best_at(rows["8-bit"], t, key), best_at(rows["4-bit"], t, key)
            ratio = b[key] / a[key] if a and b else None
            summary[f"{key}@{t}"] = {"8-bit": a, "4-bit": b, "ratio": ratio}
            fmt = lambda x: f"{x[key]:.1f} (p{x['probes']} r{x['rerank']})" if x else "not reached"
            lines.append(f"| {t} | {fmt(a)} | {fmt(b)} | {ratio:.2f} |" if ratio else f"| {t} | {fmt(a)} | {fmt(b)} | - |")
    text = "\n".join(lines) + "\n"
    print(text)
    path = args.results or default_results_path(ds.name, prefix="nbits-ab-")
    write_results({"args": vars(args), "built": built, "rows": rows, "summary": summary},
                  path, text, [])


if __name__ == "__main__":
    main()
