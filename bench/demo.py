#!/usr/bin/python3
"""ivfpq demo: Fashion-MNIST k-NN search in Postgres, exact vs the ivfpq index.

Loads the 60,000 Fashion-MNIST training images (784 dims) into a table, runs
the first 200 test images as k-NN queries with exact search (sequential scan:
ground truth and baseline latency), then, if the ivfpq access method is
installed, builds an ivfpq index and prints recall@10 and latency for a few
(ivfpq.probes, ivfpq.rerank) settings next to exact search.  Then the same
images arrive over six days into a managed table (ivfpq_manage,
ivfpq_rotate): each day is searchable at once through inherited codebooks,
the background worker retrains every sealed day, and the queries run over
the parent.

Normally started by bench/demo.sh, which provides a throwaway cluster; it
connects with --dsn or the libpq environment (PGHOST, PGPORT, ...).
"""

import argparse
import datetime
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
    ap.add_argument("--no-partitions", action="store_true", help="skip the daily-partitions part")
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

    header = header_line()
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
    if not args.no_partitions:
        daily_partitions(conn, base, queries, truth)
    conn.close()
    return 0


def daily_partitions(conn, base, queries, truth, days=6):
    """The same images as a self-maintaining table: one partition a day, rotated
    with ivfpq_rotate, each day's index inherited at first and retrained by the
    background worker once the day is over; then k-NN over the parent."""
    say()
    say(f"Daily partitions: the {base.shape[0]} images arrive over {days} days, "
        f"{base.shape[0] // days} a day, the last day being today")
    today = conn.execute("SELECT (now() AT TIME ZONE 'UTC')::date").fetchone()[0]
    first = today - datetime.timedelta(days=days - 1)
    conn.execute("DROP TABLE IF EXISTS events")
    conn.execute(f"CREATE TABLE events (id int, at timestamptz NOT NULL, embedding vector({base.shape[1]})) "
                 "PARTITION BY RANGE (at)")
    sql = ("SELECT action, partition FROM ivfpq_manage('events', 'at', premake => 1, "
           f"index_options => 'm = 56', now => '{first} 12:00+00')")
    say(f"  {sql}")
    for action, partition in conn.execute(sql).fetchall():
        say(f"    {action} {partition}")
    per_day = base.shape[0] // days
    for d in range(days):
        day = first + datetime.timedelta(days=d)
        actions = conn.execute(f"SELECT action, partition FROM ivfpq_rotate('events', now => '{day} 12:00+00')").fetchall()
        lo, hi = d * per_day, (d + 1) * per_day if d < days - 1 else base.shape[0]
        conn.execute(f"INSERT INTO events SELECT id, '{day} 12:00+00', embedding FROM items WHERE id >= {lo} AND id < {hi}")
        say(f"  day {d + 1} ({day}): rotate -> {', '.join(f'{a} {p}' for a, p in actions) or 'nothing to do'}; "
            f"{hi - lo} rows inserted, searchable at once")
    say("  the background worker retrains each sealed day on its own rows (REINDEX CONCURRENTLY) ...")
    deadline = time.time() + 600
    while time.time() < deadline:
        pending = conn.execute(
            "SELECT (SELECT count(*) FROM ivfpq_partitions('events') p, ivfpq_index_stats(p.index) s "
            "        WHERE s.rows > 0 AND (NOT s.trained OR (s.inherited AND p.range_to <= now()))) "
            "     + (SELECT count(*) FROM ivfpq_worker_status WHERE phase = 'building')").fetchone()[0]
        if pending == 0:
            break
        time.sleep(1)
    for row_ in conn.execute("SELECT partition, phase, reason, rows, finished - started FROM ivfpq_worker_status "
                             "WHERE phase <> 'checked' ORDER BY partition::text").fetchall():
        took = f" in {row_[4].total_seconds():.1f} s" if row_[4] is not None else ""
        say(f"    {row_[0]}: {row_[1]} ({row_[2]}), {row_[3]} rows{took}")
    # Fresh statistics so the planner sees each partition's size (a retry if
    # it meets a concurrent rebuild of the worker: ANALYZE and REINDEX
    # CONCURRENTLY can deadlock, and the deadlock detector cancels ANALYZE).
    for _attempt in range(5):
        try:
            conn.execute("ANALYZE events")
            break
        except psycopg.errors.DeadlockDetected:
            time.sleep(1)
    knn = "SELECT id FROM events ORDER BY embedding <-> (SELECT embedding FROM items WHERE id = 0) LIMIT 10"
    say(f"  EXPLAIN (COSTS OFF) {knn}:")
    for (line,) in conn.execute("EXPLAIN (COSTS OFF) " + knn).fetchall()[:12]:
        say(f"    {line}")
    say()
    say(header_line())
    for probes, rerank in ((2, 50), (4, 100)):
        conn.execute(f"SET ivfpq.probes = {probes}")
        conn.execute(f"SET ivfpq.rerank = {rerank}")
        found, lat = pgclient.run_queries(conn, queries, "l2", K, table="events", warmup=queries[-3:])
        say(row(f"parent probes={probes} rerank={rerank}", recall(found, truth), lat))


def header_line():
    return f"  {'search':<28}{'recall@10':>9}{'mean ms':>10}{'p50 ms':>10}{'p99 ms':>10}  {'speedup':>8}"


if __name__ == "__main__":
    sys.exit(main())
