#!/usr/bin/python3
"""Daily partitions vs one table: the same rows searched through P per-day ivfpq
indexes (Merge Append over the partitioned parent) and through one ivfpq index.

Steps, on one cluster, in one run:
  1. partitioned side: parts (id int, ts timestamptz, embedding vector(d))
     PARTITION BY RANGE (ts), one partition per day from --start-date, R rows
     each (rows spread over the day), each partition loaded by binary COPY,
     VACUUM ANALYZE'd and given its own ivfpq index trained on its own rows
     (lists = R / 1000 unless --part-lists);
  2. single side: items (id, ts, embedding) with the same P x R rows and one
     ivfpq index (lists = N / 1000 up to 1M rows, sqrt(N) beyond, as the index
     itself derives them, unless --single-lists);
  3. EXPLAIN of SELECT id FROM parts ORDER BY embedding <-> $1 LIMIT 10 once:
     the plan must be Limit -> Merge Append -> one Index Scan per partition;
  4. a (ivfpq.probes, ivfpq.rerank) sweep on each side (separate value lists),
     one connection per side, queries one at a time through a prepared
     statement with a binary vector parameter; recall@10 against exact ground
     truth, QPS and latency percentiles. Settings are interleaved: the i-th
     setting of the partitioned side, then at once the i-th of the single
     side, so noise on this shared machine hits both sides alike;
  5. best QPS per recall target (0.9, 0.95, 0.98) on each side and the ratio
     single / partitioned ("partitioned is N x slower");
  6. memory per backend after the sweep, from pg_backend_memory_contexts in
     each querying backend: ivfpq's contexts and the backend's total (and an
     idle backend's total for reference);
  6b. many connections (--connections, default 100; 0 skips): each opens,
     sets ivfpq.cache_mb to each of --cache-budgets in turn, runs a few
     queries over the parent at the setting that reached recall 0.95, and
     reports its ivfpq memory contexts and its RssAnon
     (bench/connections_memory.py): the budget holding with 30 partitions
     and 100 connections;
  7. one nightly seal-and-retrain: REINDEX INDEX CONCURRENTLY of the newest
     partition's index (what the background worker does once a day is
     sealed), then a new empty partition for the next day whose index is
     created WITH (codebooks_from = <that index>) (what rotation does);
  8. figures printed and written to bench/results/partitions-<dataset>-<P>x<R>-<date>.{md,json}.

Datasets: generated (768 dims; P x R rows of datasets.py's generated set) or
fashion-mnist (60000 x 784, split by id into P partitions of 60000 / P rows).

    bash bench/partitions.sh generated --partitions 30 --rows-per-partition 30000
    bash bench/partitions.sh fashion-mnist --partitions 10

Connection: --dsn, or the libpq environment (PGHOST, PGPORT, ...); normally
started by bench/partitions.sh, which provides a throwaway cluster.
"""

import argparse
import datetime
import math
import os
import sys
import time

import numpy as np
import psycopg

import connections_memory
import datasets
import ivfpq_bench
import pgclient
from ivfpq_bench import K, RECALL_TARGETS, best_at, fmt, int_list, log, mib

PARENT = "parts"
SINGLE = "items"
SINGLE_INDEX = "items_embedding_ivfpq"
DAY = datetime.timedelta(days=1)
# (partitions, rows per partition) when not given.
DEFAULT_SHAPE = {"generated": (30, 30_000), "fashion-mnist": (10, None)}
FASHION_ROWS = 60_000


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=sorted(DEFAULT_SHAPE), help="generated (768 dims) | fashion-mnist")
    ap.add_argument("--partitions", type=int, help="daily partitions P (default 30 for generated, 10 for fashion-mnist)")
    ap.add_argument("--rows-per-partition", type=int,
                    help="rows per partition R (default 30000 for generated, 60000 / P for fashion-mnist)")
    ap.add_argument("--start-date", default="2024-01-01", help="day of the first partition, UTC (default %(default)s)")
    ap.add_argument("--part-lists", type=int, help="lists of each partition's index (default R / 1000, at least 1)")
    ap.add_argument("--single-lists", type=int,
                    help="lists of the single table's index (default N / 1000 up to 1M rows, sqrt(N) beyond)")
    ap.add_argument("--m", type=int, help="PQ subquantizers on both sides (default: the index's own, "
                    "the divisor of the dimensions closest to dimensions / 8)")
    ap.add_argument("--part-probes", type=int_list, default=[1, 2, 3, 4, 6, 8, 12, 16],
                    help="ivfpq.probes values on the partitioned side; values above the lists are skipped "
                    "(default %(default)s)")
    ap.add_argument("--part-rerank", type=int_list,
                    help="ivfpq.rerank values on the partitioned side (default: 10,20,50,100 per partition scan, "
                    "i.e. those times P while ivfpq.share_rerank is on, as it is by default: then the value is "
                    "shared among the partitions' scans, each re-ranking rerank / P, at least 10)")
    ap.add_argument("--single-probes", type=int_list, default=[2, 4, 8, 16, 32, 64, 128],
                    help="ivfpq.probes values on the single table (default %(default)s)")
    ap.add_argument("--single-rerank", type=int_list, default=[10, 20, 50, 100, 200],
                    help="ivfpq.rerank values on the single table (default %(default)s)")
    ap.add_argument("--part-set", action="append", default=[], metavar="NAME=VALUE",
                    help="SET on the partitioned side's connection, e.g. ivfpq.share_rerank=off (repeatable)")
    ap.add_argument("--single-set", action="append", default=[], metavar="NAME=VALUE",
                    help="SET on the single table's connection (repeatable)")
    ap.add_argument("--metric", choices=sorted(pgclient.OPCLASSES), default="l2",
                    help="l2 (vector_l2_ops), ip (vector_ip_ops) or cosine (vector_cosine_ops)")
    ap.add_argument("--nqueries", type=int, default=500, help="queries per setting (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed queries before each setting (default %(default)s)")
    ap.add_argument("--dsn", default="", help="libpq connection string (default: libpq environment)")
    ap.add_argument("--maintenance-work-mem", default="2GB", help="for CREATE INDEX / REINDEX (default %(default)s)")
    ap.add_argument("--index-options", default="", help="extra WITH (...) options of the trained indexes, "
                    "e.g. 'sample_rows = 20000'")
    ap.add_argument("--table-options", default="", help="CREATE TABLE ... WITH (...) options of the single "
                    "table and of every partition, e.g. 'toast_tuple_target = 8160'")
    ap.add_argument("--connections", type=int, default=100,
                    help="connections of the memory step (default %(default)s; 0 skips it; max_connections must allow it)")
    ap.add_argument("--cache-budgets", type=int_list, default=[256, 16],
                    help="ivfpq.cache_mb values of the memory step (default 256,16)")
    ap.add_argument("--results", help="output path (.md and .json written next to each other); "
                    "default bench/results/partitions-<dataset>-<P>x<R>-<date>")
    args = ap.parse_args(argv)
    partitions, rows = DEFAULT_SHAPE[args.dataset]
    args.partitions = args.partitions or partitions
    if args.dataset == "fashion-mnist":
        rows = FASHION_ROWS // args.partitions
    args.rows_per_partition = args.rows_per_partition or rows
    if args.partitions < 1 or args.rows_per_partition < 1:
        ap.error("--partitions and --rows-per-partition must be positive")
    if args.dataset == "fashion-mnist" and args.partitions * args.rows_per_partition > FASHION_ROWS:
        ap.error(f"fashion-mnist has {FASHION_ROWS} rows: {args.partitions} x {args.rows_per_partition} do not fit")
    for item in args.part_set + args.single_set:
        if "=" not in item:
            ap.error(f"--part-set/--single-set take NAME=VALUE, not {item!r}")
    try:
        args.start = datetime.datetime.fromisoformat(args.start_date).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        ap.error(f"--start-date {args.start_date!r} is not a date (YYYY-MM-DD)")
    return args


def apply_settings(conn, items):
    """SET each NAME=VALUE on conn (set_config, so values need no quoting)."""
    for item in items:
        name, value = (x.strip() for x in item.split("=", 1))
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))


def default_part_rerank(conn, partitions):
    """10, 20, 50, 100 re-ranked rows per partition scan, as ivfpq.rerank values for this session."""
    per_scan = [10, 20, 50, 100]
    share = conn.execute("SELECT current_setting('ivfpq.share_rerank', true)").fetchone()[0]
    return [r * partitions for r in per_scan] if share == "on" else per_scan


def default_lists(rows):
    """The index's own default lists: rows / 1000 up to 1M rows, sqrt(rows) beyond; at least 1."""
    return max(1, int(rows / 1000 if rows <= 1_000_000 else math.sqrt(rows)))


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------

def row_times(start, partitions, rows_per_partition):
    """Binary timestamptz of every row: partition d's rows spread evenly over day d."""
    step = pgclient.pg_microseconds(start + DAY) - pgclient.pg_microseconds(start)
    within = np.arange(rows_per_partition, dtype=np.int64) * (step // rows_per_partition)
    days = np.arange(partitions, dtype=np.int64)[:, None] * step
    return (pgclient.pg_microseconds(start) + days + within[None, :]).ravel()


def partition_name(day):
    return f"{PARENT}_{day:%Y%m%d}"


def index_name(table):
    return f"{table}_embedding_idx"


def day_of(args, d):
    return args.start + d * DAY


def create_partition(conn, args, d, dim):
    """CREATE TABLE parts_<day> PARTITION OF parts for day d; return its name."""
    name = partition_name(day_of(args, d))
    lo, hi = day_of(args, d), day_of(args, d + 1)
    with_clause = f" WITH ({args.table_options})" if args.table_options else ""
    conn.execute(f"CREATE TABLE {name} PARTITION OF {PARENT} FOR VALUES FROM ('{lo.isoformat()}') "
                 f"TO ('{hi.isoformat()}'){with_clause}")
    return name


def load_partitioned(conn, args, base, times, part_lists):
    """Create parts and its daily partitions, load each and build its own ivfpq index; return a dict."""
    P, R = args.partitions, args.rows_per_partition
    dim = base.shape[1]
    conn.execute(f"DROP TABLE IF EXISTS {PARENT} CASCADE")
    conn.execute(f"CREATE TABLE {PARENT} (id int NOT NULL, ts timestamptz NOT NULL, embedding vector({dim})) "
                 f"PARTITION BY RANGE (ts)")
    options = ivfpq_bench.index_options(part_lists, args.m, args.index_options)
    out = {"partitions": [], "load_s": 0.0, "build_s": 0.0}
    for d in range(P):
        name = create_partition(conn, args, d, dim)
        t0 = time.perf_counter()
        rows = slice(d * R, (d + 1) * R)
        pgclient.copy_into(conn, name, np.arange(rows.start, rows.stop), base[rows], times[rows], log=None)
        conn.execute(f"VACUUM (ANALYZE) {name}")
        load_s = time.perf_counter() - t0
        build_s, index_bytes, stats, sql = ivfpq_bench.create_index(
            conn, args.metric, options, args.maintenance_work_mem, name, index_name(name), verbose=d == 0)
        table_bytes = conn.execute("SELECT pg_table_size(%s::regclass)", (name,)).fetchone()[0]
        out["partitions"].append({"name": name, "rows": R, "load_s": load_s, "build_s": build_s,
                                  "table_bytes": table_bytes, "index_bytes": index_bytes})
        out["load_s"] += load_s
        out["build_s"] += build_s
        if d == 0:
            out["index_sql"], out["stats"] = sql, stats
        log(f"pg: {name}: {R} rows loaded in {load_s:.1f} s, CREATE INDEX {build_s:.1f} s, "
            f"table {mib(table_bytes)}, index {mib(index_bytes)}")
    conn.execute(f"ANALYZE {PARENT}")
    out["table_bytes"] = sum(p["table_bytes"] for p in out["partitions"])
    out["index_bytes"] = sum(p["index_bytes"] for p in out["partitions"])
    return out


def load_single(conn, args, base, times, single_lists):
    """Load the same rows into one table with one ivfpq index; return a dict."""
    log(f"pg: loading {base.shape[0]} rows into {SINGLE} (binary COPY)")
    load_s = pgclient.load_table(conn, base, SINGLE, log=log, table_options=args.table_options or None,
                                 times=times)
    build_s, index_bytes, stats, sql = ivfpq_bench.create_index(
        conn, args.metric, ivfpq_bench.index_options(single_lists, args.m, args.index_options),
        args.maintenance_work_mem, SINGLE, SINGLE_INDEX)
    table_bytes = conn.execute(f"SELECT pg_table_size('{SINGLE}')").fetchone()[0]
    log(f"pg: {SINGLE}: loaded in {load_s:.1f} s, CREATE INDEX {build_s:.1f} s, "
        f"table {mib(table_bytes)}, index {mib(index_bytes)}")
    return {"load_s": load_s, "build_s": build_s, "table_bytes": table_bytes, "index_bytes": index_bytes,
            "index_sql": sql, "stats": stats}


def prewarm_all(conn, partitions):
    for p in partitions:
        pgclient.prewarm(conn, p["name"])
        pgclient.prewarm(conn, index_name(p["name"]))
    pgclient.prewarm(conn, SINGLE)
    pgclient.prewarm(conn, SINGLE_INDEX)


# --------------------------------------------------------------------------
# Plans, sweep, memory, retrain
# --------------------------------------------------------------------------

def merge_append_of_index_scans(partitions):
    """A plan test: Merge Append over one ivfpq Index Scan per partition."""
    def check(plan):
        return "Merge Append" in plan and plan.count("Index Scan using") == partitions
    return check


def interleaved_sweep(conns, settings, queries, truth, args):
    """Measure setting i of each side back to back, for every i; return rows per side."""
    rows = {side: [] for side in settings}
    table = {"partitioned": PARENT, "single": SINGLE}
    for i in range(max(len(s) for s in settings.values())):
        for side, side_settings in settings.items():
            if i < len(side_settings):
                probes, rerank = side_settings[i]
                rows[side].append(ivfpq_bench.measure_setting(
                    conns[side], probes, rerank, queries, truth, args.metric, args.warmup_queries,
                    table[side], f"{side:>11}"))
    return rows


def compare(rows):
    """Best QPS per recall target on each side and the ratio single / partitioned."""
    out = {}
    for target in RECALL_TARGETS:
        a, b = best_at(rows["partitioned"], target), best_at(rows["single"], target)
        out[str(target)] = {"partitioned": a, "single": b,
                            "single_over_partitioned": (b["qps"] / a["qps"]) if a and b else None}
    return out


def memory(conns, dsn):
    """ivfpq and total memory of each querying backend, and of an idle backend."""
    out = {side: pgclient.memory_contexts(conn) for side, conn in conns.items()}
    with psycopg.connect(dsn, autocommit=True) as idle:
        idle.execute("SELECT '[1]'::vector")  # loads the library, touches no index
        out["idle"] = pgclient.memory_contexts(idle)
    return out


def many_connections(args, comparison, queries):
    """The memory of --connections backends querying the parent, per cache budget, at the
    partitioned side's setting that reached recall 0.95 (else the best it reached)."""
    if args.connections <= 0:
        return None
    reached = [c["partitioned"] for c in comparison.values() if c["partitioned"]]
    chosen = comparison.get("0.95", {}).get("partitioned") or (reached[-1] if reached else None)
    sets = list(args.part_set)
    if chosen:
        sets += [f"ivfpq.probes={chosen['probes']}", f"ivfpq.rerank={chosen['rerank']}"]
    return connections_memory.measure(args.dsn, PARENT, queries[:5], args.connections,
                                      args.cache_budgets, sets, log)


def seal_and_retrain(conn, args, partitions, dim):
    """REINDEX CONCURRENTLY the newest partition's index, then create the next day's
    empty partition with an index inheriting its codebooks; return the timings."""
    sealed = partitions[-1]["name"]
    sealed_index = index_name(sealed)
    conn.execute(f"SET maintenance_work_mem = '{args.maintenance_work_mem}'")
    conn.execute("CHECKPOINT")
    sql = f"REINDEX INDEX CONCURRENTLY {sealed_index}"
    log(f"pg: {sql}")
    reindex_s = pgclient.timed(conn, sql)
    reindex_stats = ivfpq_bench.index_stats(conn, sealed_index)
    log(f"pg: REINDEX CONCURRENTLY of {sealed_index} ({args.rows_per_partition} rows): {reindex_s:.1f} s")

    new = create_partition(conn, args, args.partitions, dim)
    create_s, new_bytes, new_stats, create_sql = ivfpq_bench.create_index(
        conn, args.metric, f"codebooks_from = '{sealed_index}'", args.maintenance_work_mem, new, index_name(new))
    log(f"pg: CREATE INDEX WITH (codebooks_from) on empty {new}: {create_s * 1000:.0f} ms")
    return {"reindex_sql": sql, "reindex_s": reindex_s, "reindex_rows": args.rows_per_partition,
            "reindex_stats": reindex_stats, "rotate_sql": create_sql, "rotate_create_index_s": create_s,
            "rotate_index_bytes": new_bytes, "rotate_stats": new_stats}


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def session_text(result, side):
    """The SETs given for one side's connection and its ivfpq.share_rerank."""
    session = result["session_settings"][side]
    shown = list(session["set"])
    share = session["ivfpq"].get("ivfpq.share_rerank")
    if share is not None and not any(s.split("=")[0].strip() == "ivfpq.share_rerank" for s in shown):
        shown.append(f"ivfpq.share_rerank={share}")
    return ", ".join(f"`{s}`" for s in shown) or "defaults"


def setting_text(row):
    return f"{row['qps']:.1f} ({row['probes']}, {row['rerank']}, {row['recall@10']:.3f})" if row else "not reached"


def sweep_table(rows):
    lines = ["| probes | rerank | recall@10 | QPS | mean ms | p50 ms | p99 ms |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['probes']} | {r['rerank']} | {r['recall@10']:.3f} | {r['qps']:.1f} | "
                     f"{r['mean_ms']:.2f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    return lines + [""]


def plan_excerpt(plan, head=6, tail=2):
    lines = plan.splitlines()
    if len(lines) <= head + tail + 1:
        return lines
    return lines[:head] + [f"   ... ({len(lines) - head - tail} more lines)"] + lines[-tail:]


def memory_rows(mem, connections=100):
    lines = ["| backend | ivfpq contexts | ivfpq bytes | backend total | x "
             f"{connections} connections (ivfpq) |", "|---|---|---|---|---|"]
    for side in ("partitioned", "single", "idle"):
        m = mem[side]
        count = sum(c["contexts"] for c in m["ivfpq_contexts"].values())
        lines.append(f"| {side} | {count} | {mib(m['ivfpq_total_bytes'])} | {mib(m['backend_total_bytes'])} | "
                     f"{mib(connections * m['ivfpq_total_bytes'])} |")
    lines.append("")
    for side in ("partitioned", "single"):
        per = ", ".join(f"{name} x {c['contexts']}: {mib(c['total_bytes'])}"
                        for name, c in mem[side]["ivfpq_contexts"].items())
        lines.append(f"- {side}: {per or 'none'}")
    return lines + [""]


def summary_lines(result):
    """Headline figures for stdout (and the top of the report)."""
    part, single, mem, rt = result["partitioned"], result["single"], result["memory"], result["retrain"]
    out = [f"plan over {PARENT}: {result['plan_shape']}"]
    for target, c in result["comparison"].items():
        ratio = c["single_over_partitioned"]
        if ratio is None:
            verdict = "no ratio: not reached on both sides"
        elif ratio >= 1:
            verdict = f"partitioned is {ratio:.2f}x slower"
        else:
            verdict = f"partitioned is {1 / ratio:.2f}x faster"
        out.append(f"recall@10 >= {target}: partitioned {setting_text(c['partitioned'])}, "
                   f"single {setting_text(c['single'])} [QPS (probes, rerank, recall)]: {verdict}")
    for side in ("partitioned", "single"):
        m = mem[side]
        out.append(f"memory of the {side} backend: ivfpq contexts {mib(m['ivfpq_total_bytes'])}, "
                   f"backend total {mib(m['backend_total_bytes'])} (idle backend {mib(mem['idle']['backend_total_bytes'])})")
    for b in (result.get("connections_memory") or {}).get("budgets", []):
        out.append(f"{b['connections']} connections over {PARENT}, ivfpq.cache_mb = {b['cache_mb']}: ivfpq contexts "
                   f"at most {mib(b['ivfpq_bytes_max'])} per backend ({'within' if b['within_budget'] else 'OVER'} "
                   f"budget), {mib(b['ivfpq_bytes_sum'])} in all"
                   + (f", RssAnon {mib(b['rss_anon_bytes_sum'])} in all" if b["rss_anon_bytes_sum"] else ""))
    out.append(f"CREATE INDEX: {result['partitions']} partitions {part['build_s']:.1f} s in total "
               f"({part['build_s'] / result['partitions']:.1f} s each), single table {single['build_s']:.1f} s")
    out.append(f"nightly seal-and-retrain: REINDEX INDEX CONCURRENTLY of one {rt['reindex_rows']}-row partition "
               f"{rt['reindex_s']:.1f} s; CREATE INDEX WITH (codebooks_from) on an empty partition "
               f"{rt['rotate_create_index_s'] * 1000:.0f} ms")
    return out


def markdown(result):
    """The results as a Markdown report."""
    ds, part, single, rt = result["dataset"], result["partitioned"], result["single"], result["retrain"]
    P, R = result["partitions"], result["rows_per_partition"]
    lines = ivfpq_bench.report_head(
        f"ivfpq daily partitions vs one table: {ds['name']} ({P} x {R} = {ds['rows']} rows x {ds['dim']}, "
        f"{result['metric']})", result)
    lines.insert(lines.index("## Machine and settings") + 3,
                 "- load average after the sweep: " + ", ".join(map(str, result["environment"]["load_average_after_sweep"])))
    lines += ["## Summary", ""] + [f"- {s}" for s in summary_lines(result)] + [""]
    lines += [f"> {n}" for n in result["notes"]] + ([""] if result["notes"] else [])
    lines += ["## Layout, build and sizes", "",
              "| | partitioned | single table |", "|---|---|---|",
              f"| tables | {PARENT}: {P} daily partitions from {result['start_date']} (range on ts), {R} rows each "
              f"| {SINGLE}: {ds['rows']} rows |",
              f"| index | one per partition: `{part['index_sql']}` (and likewise) | `{single['index_sql']}` |",
              f"| session | {session_text(result, 'partitioned')} | {session_text(result, 'single')} |",
              f"| lists, m | {part['stats'] and part['stats'].get('lists')}, {part['stats'] and part['stats'].get('m')} "
              f"per partition | {single['stats'] and single['stats'].get('lists')}, "
              f"{single['stats'] and single['stats'].get('m')} |",
              f"| load (binary COPY + VACUUM ANALYZE) | {part['load_s']:.1f} s | {single['load_s']:.1f} s (with primary key) |",
              f"| CREATE INDEX | {part['build_s']:.1f} s in total, {part['build_s'] / P:.1f} s per partition "
              f"| {single['build_s']:.1f} s |",
              f"| table size | {mib(part['table_bytes'])} | {mib(single['table_bytes'])} |",
              f"| index size | {mib(part['index_bytes'])} | {mib(single['index_bytes'])} |",
              ""]
    lines += ["## Plan over the parent", "", f"Shape: {result['plan_shape']}", "", "```"]
    lines += plan_excerpt(result["plan"]) + ["```", ""]
    lines += ["## Best QPS at a recall target", "",
              "| recall@10 >= | partitioned QPS (probes, rerank, recall) | single QPS (probes, rerank, recall) "
              "| single / partitioned |", "|---|---|---|---|"]
    for target, c in result["comparison"].items():
        lines.append(f"| {target} | {setting_text(c['partitioned'])} | {setting_text(c['single'])} "
                     f"| {fmt(c['single_over_partitioned'], '.2f')} |")
    lines += ["", "Goal of issue 7: the partitioned query within 3x of the single-table query at equal recall.", ""]
    lines += ["## Sweep: partitioned (interleaved with the single table)", ""] + sweep_table(part["rows"])
    lines += ["## Sweep: single table", ""] + sweep_table(single["rows"])
    lines += ["## Memory per backend after the sweep", "",
              "pg_backend_memory_contexts in each querying backend (one connection per side); ivfpq = contexts "
              "whose name starts with 'ivfpq'; idle = a fresh connection that only loaded the library.", ""]
    lines += memory_rows(result["memory"])
    lines += connections_memory.markdown(result.get("connections_memory"))
    lines += ["## Nightly seal-and-retrain", "", "| step | time |", "|---|---|",
              f"| `{rt['reindex_sql']}` ({rt['reindex_rows']} rows; what the worker does on a sealed day) "
              f"| {rt['reindex_s']:.1f} s |",
              f"| `{rt['rotate_sql']}` on an empty new partition (what rotation does) "
              f"| {rt['rotate_create_index_s'] * 1000:.0f} ms |", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    P, R = args.partitions, args.rows_per_partition
    N = P * R
    spec = "fashion-mnist" if args.dataset == "fashion-mnist" else f"generated:{N}"
    ds = datasets.load(spec).limit(N)
    nq = min(args.nqueries, ds.queries.shape[0])
    ds = ds.limit(N, nq + args.warmup)
    queries = np.asarray(ds.queries[:nq], dtype=np.float32)
    # Warm-up queries come from outside the measured set when there are enough.
    args.warmup_queries = ds.queries[nq:nq + args.warmup] if ds.queries.shape[0] >= nq + args.warmup \
        else ds.queries[:args.warmup]
    truth = ds.ground_truth(args.metric)[:nq]
    part_lists = args.part_lists or default_lists(R)
    single_lists = args.single_lists or default_lists(N)
    log(f"dataset {ds.name}: {P} partitions x {R} rows = {N} x {ds.dim}, {nq} queries, metric {args.metric}; "
        f"lists {part_lists} per partition, {single_lists} for the single table")

    conns = {side: psycopg.connect(args.dsn, autocommit=True) for side in ("partitioned", "single")}
    try:
        conn = conns["partitioned"]
        conn.execute("CREATE EXTENSION IF NOT EXISTS ivfpq")
        for c in conns.values():
            pgclient.register_vector(c)
        # Server-wide settings first, then each side's own SETs.
        environment, settings = ivfpq_bench.machine_notes(conn), ivfpq_bench.server_settings(conn)
        apply_settings(conns["partitioned"], args.part_set)
        apply_settings(conns["single"], args.single_set)
        args.part_rerank = args.part_rerank or default_part_rerank(conns["partitioned"], P)
        result = {"dataset": {"name": ds.name, "rows": N, "dim": int(ds.dim)}, "metric": args.metric,
                  "partitions": P, "rows_per_partition": R, "start_date": args.start_date,
                  "part_lists": part_lists, "single_lists": single_lists, "m": args.m, "nqueries": nq,
                  "part_probes": args.part_probes, "part_reranks": args.part_rerank,
                  "single_probes": args.single_probes, "single_reranks": args.single_rerank,
                  "environment": environment, "settings": settings,
                  "session_settings": {side: {"set": getattr(args, f"{short}_set"),
                                              "ivfpq": ivfpq_bench.ivfpq_settings(conns[side])}
                                       for side, short in (("partitioned", "part"), ("single", "single"))},
                  "notes": []}

        # 1-2. both layouts, same rows
        base = ds.base
        times = row_times(args.start, P, R)
        part = load_partitioned(conn, args, base, times, part_lists)
        single = load_single(conns["single"], args, base, times, single_lists)
        prewarm_all(conn, part["partitions"])

        # 3. the plan over the parent, checked once
        plan, notes = pgclient.index_plan(conns["partitioned"], queries[0], merge_append_of_index_scans(P),
                                          args.metric, K, PARENT, log)
        result["plan"], result["plan_shape"] = plan, pgclient.plan_shape(plan)
        log(f"pg: plan over {PARENT}: {result['plan_shape']}")
        _, single_notes = pgclient.index_plan(conns["single"], queries[0], lambda text: SINGLE_INDEX in text,
                                              args.metric, K, SINGLE, log)
        result["notes"] += notes + single_notes

        # 4. interleaved sweep
        settings = {"partitioned": ivfpq_bench.sweep_settings(args.part_probes, args.part_rerank, part_lists),
                    "single": ivfpq_bench.sweep_settings(args.single_probes, args.single_rerank, single_lists)}
        rows = interleaved_sweep(conns, settings, queries, truth, args)
        result["environment"]["load_average_after_sweep"] = [round(x, 2) for x in os.getloadavg()]
        library = ivfpq_bench.library_notes(conn)
        if library.get("sha256") != environment["library"].get("sha256"):
            result["notes"].append(f"the installed ivfpq library changed during the run ({library.get('mtime')}); "
                                   "the sweep's connections kept the one they loaded at the start")
        part["rows"], single["rows"] = rows["partitioned"], rows["single"]
        result["partitioned"], result["single"] = part, single

        # 5-7. comparison, memory, retrain
        result["comparison"] = compare(rows)
        result["memory"] = memory(conns, args.dsn)
        result["connections_memory"] = many_connections(args, result["comparison"], queries)
        result["retrain"] = seal_and_retrain(conn, args, part["partitions"], ds.dim)
    finally:
        for c in conns.values():
            c.close()

    # 8. report
    path = args.results or ivfpq_bench.default_results_path(f"{args.dataset}-{P}x{R}", "partitions-")
    ivfpq_bench.write_results(result, path, markdown(result), summary_lines(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
