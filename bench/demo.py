#!/usr/bin/python3
"""ivfpq demo: Fashion-MNIST k-NN search in Postgres, exact vs the ivfpq index.

Loads the 60,000 Fashion-MNIST training images (784 dims) into a table, runs
the first 200 test images as k-NN queries with exact search (sequential scan:
ground truth and baseline latency), then, if the ivfpq access method is
installed, builds an ivfpq index and prints recall@10 and latency for a few
(ivfpq.probes, ivfpq.rerank) settings next to exact search.

Normally started by bench/demo.sh, which provides a throwaway cluster; it
connects with --dsn or the libpq environment (PGHOST, PGPORT, ...).
"""

import argparse
import sys
import time

import numpy as np
import psycopg

import datasets
import pgclient

SETTINGS = ((1, 0), (4, 0), (4, 50), (8, 100), (16, 200), (32, 500))
K = 10


def say(msg=""):
    print(msg, flush=True)


def int_pairs(text):
    return [tuple(int(v) for v in pair.split(":")) for pair in text.split(",") if pair]


def recall(found, truth):
    return float(np.mean([len(set(f[:K]) & set(t[:K])) / K for f, t in zip(found, truth)]))


def row(label, rec, lat, exact_mean=None):
    s = pgclient.latency_summary(lat)
    speedup = f"{exact_mean / s['mean_ms']:7.1f}x" if exact_mean else "       –"
    rec_text = f"{rec:9.3f}" if rec is not None else "        –"
    return f"  {label:<28}{rec_text}{s['mean_ms']:10.2f}{s['p50_ms']:10.2f}{s['p99_ms']:10.2f}  {speedup}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", default="", help="libpq connection string (default: libpq environment)")
    ap.add_argument("--nqueries", type=int, default=200, help="test images used as queries (default %(default)s)")
    ap.add_argument("--lists", type=int, default=256, help="index lists (default %(default)s)")
    ap.add_argument("--m", type=int, default=56, help="PQ subquantizers (default %(default)s)")
    ap.add_argument("--settings", type=int_pairs, default=list(SETTINGS),
                    help="comma-separated probes:rerank pairs (default 1:0,4:0,4:50,8:100,16:200,32:500)")
    args = ap.parse_args()

    base, queries = datasets.fashion_mnist()
    queries = np.asarray(queries[:args.nqueries])
    conn = psycopg.connect(args.dsn, autocommit=True)
    conn.execute("CREATE EXTENSION IF NOT EXISTS ivfpq")
    pgclient.register_vector(conn)

    say(f"Loading Fashion-MNIST: {base.shape[0]} images x {base.shape[1]} dims into table items ...")
    # Pixel vectors compress well; keep them raw and inline so the index's
    # exact rerank never has to decompress a row (see README, Storage).
    load_s = pgclient.load_table(conn, base, log=None, table_options="toast_tuple_target = 8160")
    table_bytes = conn.execute("SELECT pg_table_size('items')").fetchone()[0]
    pgclient.prewarm(conn, "items")
    say(f"  loaded in {load_s:.1f} s, table size {table_bytes / 2**20:.0f} MiB")

    say(f"Exact search (sequential scan) for {len(queries)} test images ...")
    conn.execute("SET enable_indexscan = off")
    truth, exact_lat = pgclient.run_queries(conn, queries, "l2", K, warmup=queries[:3])
    conn.execute("RESET enable_indexscan")
    exact_mean = pgclient.latency_summary(exact_lat)["mean_ms"]

    header = f"  {'search':<28}{'recall@10':>9}{'mean ms':>10}{'p50 ms':>10}{'p99 ms':>10}  {'speedup':>8}"
    if not pgclient.am_exists(conn):
        say()
        say("ivfpq index not available yet: showing exact search only")
        say()
        say(header)
        say(row("exact (seq scan)", None, exact_lat))
        conn.close()
        return 0

    sql = (f"CREATE INDEX items_embedding_ivfpq ON items USING ivfpq (embedding vector_l2_ops) "
           f"WITH (lists = {args.lists}, m = {args.m})")
    say(f"Building the index: {sql} ...")
    t0 = time.perf_counter()
    conn.execute(sql)
    build_s = time.perf_counter() - t0
    index_bytes = conn.execute("SELECT pg_relation_size('items_embedding_ivfpq')").fetchone()[0]
    pgclient.prewarm(conn, "items_embedding_ivfpq")
    say(f"  built in {build_s:.1f} s, index size {index_bytes / 2**20:.1f} MiB "
        f"({100 * index_bytes / table_bytes:.0f}% of the table)")

    say()
    say(f"k-NN search, {len(queries)} queries one at a time: "
        f"SELECT id FROM items ORDER BY embedding <-> $1 LIMIT {K}")
    say()
    say(header)
    say(row("exact (seq scan)", 1.0, exact_lat))
    for probes, rerank in args.settings:
        conn.execute(f"SET ivfpq.probes = {probes}")
        conn.execute(f"SET ivfpq.rerank = {rerank}")
        found, lat = pgclient.run_queries(conn, queries, "l2", K, warmup=queries[-3:])
        say(row(f"ivfpq probes={probes} rerank={rerank}", recall(found, truth), lat, exact_mean))
    say()
    say("recall@10: share of the exact top 10 found; rerank = PQ candidates re-ranked exactly "
        "from the table (0 = PQ order only)")
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
