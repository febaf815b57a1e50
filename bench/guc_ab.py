#!/usr/bin/python3
"""One ivfpq setting on and off (any GUC, two or more values), interleaved in one cluster.

Loads the dataset into one table with one ivfpq index, then for --rounds
rounds runs every (probes, rerank) setting once per value of --guc (the order
of the values alternating between rounds), so machine noise hits every value
alike.  Reports per value the median QPS, the median backend CPU QPS (queries
per CPU second of the backend, far steadier than wall-clock QPS on a shared
machine) and recall@10, and each value's QPS over the first value's; writes
results/<name>.{md,json}.  Made for changes that leave the answers alone
(ivfpq.pool_cut): the recall column shows whether they did.

  IVFPQ_BENCH_SCRIPT=guc_ab.py bash bench/run.sh siftlike:200000 --lists 400 --m 16 \\
      --guc ivfpq.pool_cut --values off,on --probes 32,64 --rerank 50,100
"""
import argparse
import statistics
import time

import pgclient
from ivfpq_bench import create_index, default_results_path, int_list, log, measure, write_results
from nbits_ab import open_ab
from pgclient import backend_cpu_seconds


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("--lists", type=int, default=400)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--index-options", default="", help="more WITH (...) options")
    ap.add_argument("--guc", required=True, help="the setting to compare, e.g. ivfpq.pool_cut")
    ap.add_argument("--values", required=True, help="comma-separated values; the first is the baseline")
    ap.add_argument("--probes", type=int_list, default=[32, 64])
    ap.add_argument("--rerank", type=int_list, default=[50, 100])
    ap.add_argument("--nqueries", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--results", help="output path without extension")
    return ap.parse_args()


def main():
    args = parse_args()
    values = [v.strip() for v in args.values.split(",") if v.strip()]
    ds, nq, queries, spare, truth, conn = open_ab(args)

    pgclient.load_table(conn, ds.base, table="items", log=lambda *a: None)
    pgclient.prewarm(conn, "items")
    options = ", ".join(x for x in (f"lists = {args.lists}, m = {args.m}", args.index_options) if x)
    build_s, size, _, sql = create_index(conn, "l2", options, "2GB", table="items", index="items_ivfpq",
                                         verbose=False)
    pgclient.prewarm(conn, "items_ivfpq")
    log(f"{sql}: {build_s:.1f} s, {size / 2**20:.1f} MiB")

    settings = [(p, r) for p in args.probes for r in args.rerank if p <= args.lists]
    qps = {v: {s: [] for s in settings} for v in values}
    cpu = {v: {s: [] for s in settings} for v in values}
    recall = {v: {} for v in values}
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    for round_ in range(args.rounds):
        order = values if round_ % 2 == 0 else list(reversed(values))
        for p, r in settings:
            conn.execute(f"SET ivfpq.probes = {p}")
            conn.execute(f"SET ivfpq.rerank = {r}")
            for v in order:
                conn.execute(f"SET {args.guc} = '{v}'")
                before = backend_cpu_seconds(pid)
                row = measure(conn, queries, truth, "l2", spare, table="items")
                cpu[v][(p, r)].append((nq + len(spare)) / max(backend_cpu_seconds(pid) - before, 1e-3))
                qps[v][(p, r)].append(row["qps"])
                recall[v][(p, r)] = row["recall@10"]
            log(f"round {round_ + 1} probes {p:3d} rerank {r:4d}: " + "  ".join(
                f"{v}: recall {recall[v][(p, r)]:.3f} QPS {qps[v][(p, r)][-1]:7.1f} CPU QPS {cpu[v][(p, r)][-1]:7.1f}"
                for v in values))

    rows = [{"probes": p, "rerank": r,
             **{v: {"recall@10": recall[v][(p, r)], "qps": statistics.median(qps[v][(p, r)]),
                    "qps_rounds": qps[v][(p, r)], "cpu_qps": statistics.median(cpu[v][(p, r)]),
                    "cpu_qps_rounds": cpu[v][(p, r)]} for v in values}} for p, r in settings]
    base = values[0]
    head = "| probes | rerank | " + " | ".join(
        f"{args.guc} = {v}: recall@10, QPS, CPU QPS" + (f", QPS / {base}, CPU QPS / {base}" if v != base else "")
        for v in values) + " |"
    lines = [f"# {args.guc} = {', '.join(values)} on {ds.name} ({ds.base.shape[0]} x {ds.dim}), {nq} queries", "",
             f"- {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.rounds} interleaved rounds, medians",
             f"- `{sql}` ({build_s:.1f} s, {size / 2**20:.1f} MiB)", "", head,
             "|---|---|" + "---|" * len(values)]
    for row in rows:
        cells = []
        for v in values:
            x = row[v]
            cell = f"{x['recall@10']:.3f}, {x['qps']:.1f}, {x['cpu_qps']:.1f}"
            if v != base:
                cell += f", {x['qps'] / row[base]['qps']:.2f}, {x['cpu_qps'] / row[base]['cpu_qps']:.2f}"
            cells.append(cell)
        lines.append(f"| {row['probes']} | {row['rerank']} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    path = args.results or default_results_path(ds.name, prefix="guc-ab-")
    write_results({"args": vars(args), "sql": sql, "build_s": build_s, "index_bytes": size, "rows": rows},
                  path, text, [])


if __name__ == "__main__":
    main()
