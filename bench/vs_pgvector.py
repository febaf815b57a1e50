#!/usr/bin/python3
"""ivfpq against pgvector (issue 9, target 2): HNSW and IVFFlat on the same cluster, the
same rows, the same queries, measured interleaved.

Issue 9's target: at recall@10 >= 0.98, ivfpq's QPS >= 1.2 x HNSW's (m 16, ef_construction
64), its index <= 1/20 of HNSW's size, and its build <= 1/5 of HNSW's time.

Steps, in one run:
  1. the dataset's base rows (datasets.py: fashion-mnist, generated[:N], siftlike[:N]) into
     items (id int PRIMARY KEY, embedding vector(d)) by binary COPY (pgclient.load_table),
     VACUUM ANALYZE; --table-options go into CREATE TABLE ... WITH (...) on every table;
  2. CREATE INDEX items_embedding_ivfpq ON items USING ivfpq (embedding vector_l2_ops)
     [WITH (lists, m)] (--lists / --m; default: the index's own), timed after a
     CHECKPOINT; pg_relation_size; ivfpq_index_stats;
  3. with --pgvector PATH (a pgvector checkout, built and installed with make && make
     install; the benchmark never installs it): a database of its own (--pgvector-db;
     pgvector's extension is also named `vector` and defines a type `vector`), the same
     rows loaded the same way into items, copied into items_ivfflat (so the planner never
     chooses between the two indexes), then
       CREATE INDEX ... ON items USING hnsw (embedding vector_l2_ops) WITH (m = 16, ef_construction = 64)
       CREATE INDEX ... ON items_ivfflat USING ivfflat (embedding vector_l2_ops) WITH (lists = <ivfpq's lists>)
     each timed after a CHECKPOINT. Every build (ivfpq's too) runs with the same
     maintenance_work_mem (--maintenance-work-mem) and max_parallel_maintenance_workers
     (--max-parallel-maintenance-workers, default the server's: bench/run.sh sets 1);
     without --pgvector the pgvector side is skipped (a message says so) and ivfpq is
     still measured;
  4. tables and indexes loaded into shared buffers (pg_prewarm); each configuration's
     plan checked with EXPLAIN at every one of its settings (if the planner does not use
     the index, enable_seqscan is turned off on that side and the report says so);
  5. sweeps: ivfpq.probes x ivfpq.rerank (--probes, --rerank), hnsw.ef_search
     (--ef-search), ivfflat.probes (--ivfflat-probes), one connection per index. In each
     of --rounds rounds every setting of every side is measured once, the three sides
     alternating: the settings of each side are spread evenly over the round (ivfpq,
     hnsw, ivfflat, ivfpq, ...), and every other round runs in reverse order, so the
     noise of this shared machine hits all sides alike. A measurement: SET the setting,
     DISCARD PLANS, --warmup untimed queries (other query vectors), then --nqueries
     queries one at a time through one prepared statement with a binary vector parameter
     (`SELECT id FROM items ORDER BY embedding <-> $1 LIMIT 10`); QPS, latency, recall@10
     against exact ground truth (datasets.Dataset.ground_truth). Figures per setting are
     the medians over the rounds;
  6. the best QPS at recall@10 >= 0.95 / 0.98 / 0.99 of each side, ratios ivfpq / HNSW
     and ivfpq / IVFFlat (also per round), index size and build time ratios ivfpq / HNSW,
     and whether each of the issue's targets is met; Markdown + JSON to
     bench/results/vs-pgvector-<dataset>-<date>.{md,json} (--results overrides).

    bash bench/vs_pgvector.sh fashion-mnist --pgvector /work/pgvector --lists 256 --m 56
    bash bench/vs_pgvector.sh siftlike:20000 --pgvector /work/pgvector --nqueries 50 --rounds 1   # smoke run

Connection: --dsn, or the libpq environment (PGHOST, PGPORT, ...); normally started by
bench/vs_pgvector.sh, which provides a throwaway cluster.
"""

import argparse
import os
import statistics
import sys

import numpy as np
import psycopg
from psycopg import conninfo

import datasets
import ivfpq_bench
import pgclient
from churn_bench import pgvector_checkout, pgvector_installed
from filtered_bench import copy_table, executed_plan, uses_index
from ivfpq_bench import K, best_at, fmt, int_list, log, mib

TABLE = "items"
IVFFLAT_TABLE = "items_ivfflat"
SIDES = ("ivfpq", "hnsw", "ivfflat")
LABELS = {"ivfpq": "ivfpq", "hnsw": "pgvector HNSW", "ivfflat": "pgvector IVFFlat"}
RECALL_TARGETS = (0.95, 0.98, 0.99)
# Issue 9, target 2.
TARGET_RECALL = 0.98
TARGET_QPS_RATIO = 1.2
TARGET_SIZE_RATIO = 1 / 20
TARGET_BUILD_RATIO = 1 / 5


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", help="fashion-mnist | generated[:N] | siftlike[:N] (datasets.py)")
    ap.add_argument("--pgvector", metavar="PATH",
                    help="a pgvector checkout, built and installed (make && make install); without it the "
                    "pgvector side is skipped")
    ap.add_argument("--pgvector-db", default="vs_pgvector",
                    help="database created (dropped first, and at the end) for pgvector (default %(default)s)")
    ap.add_argument("--lists", type=int, help="ivfpq lists (default: the index's own, rows / 1000)")
    ap.add_argument("--m", type=int, help="ivfpq m (default: the index's own, about dimensions / 8)")
    ap.add_argument("--index-options", default="", help="extra ivfpq WITH (...) options")
    ap.add_argument("--probes", type=int_list, default=[4, 8, 16, 32, 64],
                    help="ivfpq.probes values (default 4,8,16,32,64; values above lists are dropped)")
    ap.add_argument("--rerank", type=int_list, default=[20, 50, 100, 200],
                    help="ivfpq.rerank values, 0 (PQ order) or at least 10 (default 20,50,100,200)")
    ap.add_argument("--hnsw-options", default="m = 16, ef_construction = 64",
                    help="hnsw WITH (...) options (default: %(default)s, pgvector's defaults)")
    ap.add_argument("--ef-search", type=int_list, default=[10, 20, 40, 80, 120, 200, 400],
                    help="hnsw.ef_search values (default 10,20,40,80,120,200,400)")
    ap.add_argument("--ivfflat-lists", type=int, help="ivfflat lists (default: the ivfpq index's lists)")
    ap.add_argument("--ivfflat-probes", type=int_list, default=[1, 2, 4, 8, 16, 32, 64],
                    help="ivfflat.probes values (default 1,2,4,8,16,32,64; values above lists are dropped)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds; each measures every setting of every side once (default %(default)s)")
    ap.add_argument("--nqueries", type=int, default=1000, help="queries per measurement (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=20,
                    help="untimed queries before each measurement, other vectors (default %(default)s)")
    ap.add_argument("--base-limit", type=int, help="load only the first N base rows")
    ap.add_argument("--table-options", default="",
                    help="CREATE TABLE ... WITH (...) options of every table, e.g. 'toast_tuple_target = 8160'")
    ap.add_argument("--maintenance-work-mem", default="2GB",
                    help="maintenance_work_mem of every CREATE INDEX (default %(default)s)")
    ap.add_argument("--max-parallel-maintenance-workers", type=int,
                    help="max_parallel_maintenance_workers of every CREATE INDEX (default: the server's; "
                    "bench/run.sh sets 1)")
    ap.add_argument("--dsn", default="", help="libpq connection string (default: libpq environment)")
    ap.add_argument("--results", help="output path (.md and .json written next to each other); "
                    "default bench/results/vs-pgvector-<dataset>-<date>")
    args = ap.parse_args(argv)
    if min(args.rounds, args.nqueries) < 1 or args.warmup < 0:
        ap.error("--rounds and --nqueries must be positive, --warmup not negative")
    if not (args.probes and args.rerank and args.ef_search and args.ivfflat_probes):
        ap.error("every sweep needs at least one value")
    if args.pgvector and not os.path.isfile(os.path.join(args.pgvector, "vector.control")):
        ap.error(f"--pgvector {args.pgvector}: no vector.control there (not a pgvector checkout)")
    return args


# --------------------------------------------------------------------------
# Tables and indexes
# --------------------------------------------------------------------------

def load_items(conn, base, args, prefix):
    """items with the base rows (pgclient.load_table); its size and storage."""
    log(f"{prefix}: loading {base.shape[0]} rows into {TABLE} (binary COPY)")
    load_s = pgclient.load_table(conn, base, TABLE, log=log, table_options=args.table_options or None)
    log(f"{prefix}: loaded in {load_s:.1f} s")
    return {"load_s": load_s, **table_facts(conn, TABLE)}


def table_facts(conn, table):
    """pg_table_size, the embedding column's storage and the mean stored size of a vector."""
    size, storage, avg = conn.execute(
        "SELECT pg_table_size(%s::regclass), (SELECT attstorage FROM pg_attribute WHERE attrelid = %s::regclass "
        f"AND attname = 'embedding'), (SELECT avg(pg_column_size(embedding))::float8 FROM "
        f"(SELECT embedding FROM {table} LIMIT 1000) s)", (table, table)).fetchone()
    storage = {"p": "plain", "m": "main", "e": "external", "x": "extended"}.get(storage, storage)
    return {"table": table, "table_bytes": size, "storage": storage, "avg_vector_bytes": avg}


def build_index(conn, prefix, sql, index, args):
    """DROP, then CREATE INDEX (sql) after a CHECKPOINT with the run's maintenance_work_mem and
    max_parallel_maintenance_workers, timed, its NOTICEs logged; return its figures."""
    conn.execute(f"DROP INDEX IF EXISTS {index}")
    conn.execute(f"SET maintenance_work_mem = '{args.maintenance_work_mem}'")
    if args.max_parallel_maintenance_workers is not None:
        conn.execute(f"SET max_parallel_maintenance_workers = {int(args.max_parallel_maintenance_workers)}")
    mwm, workers = conn.execute("SELECT current_setting('maintenance_work_mem'), "
                                "current_setting('max_parallel_maintenance_workers')").fetchone()
    conn.execute("CHECKPOINT")
    load = [round(x, 2) for x in os.getloadavg()]
    log(f"{prefix}: {sql}  -- maintenance_work_mem = {mwm}, max_parallel_maintenance_workers = {workers}")
    secs, notices = ivfpq_bench.timed_with_notices(conn, sql, prefix, index)
    size = conn.execute("SELECT pg_relation_size(%s::regclass)", (index,)).fetchone()[0]
    log(f"{prefix}: CREATE INDEX {index} {secs:.1f} s, {mib(size)}")
    return {"index": index, "sql": sql, "build_s": secs, "index_bytes": size, "notices": notices,
            "maintenance_work_mem": mwm, "max_parallel_maintenance_workers": workers, "load_average_before": load}


def setup_ivfpq(conn, base, args):
    table = load_items(conn, base, args, "ivfpq")
    options = ivfpq_bench.index_options(args.lists, args.m, args.index_options)
    index = "items_embedding_ivfpq"
    sql = (f"CREATE INDEX {index} ON {TABLE} USING ivfpq (embedding vector_l2_ops)"
           + (f" WITH ({options})" if options else ""))
    build = build_index(conn, "ivfpq", sql, index, args)
    build["stats"] = ivfpq_bench.index_stats(conn, index)
    for rel in (TABLE, index):
        pgclient.prewarm(conn, rel)
    return {"tables": {TABLE: table}, "builds": {"ivfpq": build}}


def setup_pgvector(conn, base, args, lists):
    """pgvector's database content: items (hnsw) and its copy items_ivfflat (ivfflat)."""
    conn.execute("CREATE EXTENSION vector")
    out = {"extversion": conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]}
    tables = {TABLE: load_items(conn, base, args, "pgvector")}
    # Copied before any vector index exists: CREATE TABLE ... (LIKE items INCLUDING ALL) copies indexes.
    copy_s = copy_table(conn, TABLE, IVFFLAT_TABLE)
    tables[IVFFLAT_TABLE] = {"load_s": None, "copy_s": copy_s, **table_facts(conn, IVFFLAT_TABLE)}
    log(f"pgvector: {TABLE} copied into {IVFFLAT_TABLE} in {copy_s:.1f} s")
    builds = {}
    for side, table, with_clause in (("hnsw", TABLE, args.hnsw_options), ("ivfflat", IVFFLAT_TABLE, f"lists = {lists}")):
        index = f"{table}_embedding_{side}"
        sql = f"CREATE INDEX {index} ON {table} USING {side} (embedding vector_l2_ops) WITH ({with_clause})"
        builds[side] = build_index(conn, "pgvector", sql, index, args)
        builds[side]["table"] = table
    for rel in (TABLE, IVFFLAT_TABLE, builds["hnsw"]["index"], builds["ivfflat"]["index"]):
        pgclient.prewarm(conn, rel)
    out["settings"] = {r[0]: r[1] for r in conn.execute(
        "SELECT name, setting FROM pg_settings WHERE name LIKE 'hnsw.%' OR name LIKE 'ivfflat.%' ORDER BY name")}
    out.update({"database": args.pgvector_db, "tables": tables, "builds": builds})
    return out


# --------------------------------------------------------------------------
# Sides, settings, measurements
# --------------------------------------------------------------------------

class Side:
    """One index measured: its connection, table, index and the settings of its sweep, each a
    list of (GUC, value)."""

    def __init__(self, name, conn, table, index, settings):
        self.name, self.conn, self.table, self.index = name, conn, table, index
        self.settings = settings
        self.plans = {}
        self.notes = []


def setting_label(setting):
    return ", ".join(f"{name.split('.', 1)[1]} {value}" for name, value in setting)


def apply(side, setting):
    """SET the setting's GUCs; DISCARD PLANS so that no plan made under another setting is reused."""
    for name, value in setting:
        side.conn.execute(f"SET {name} = {int(value)}")
    side.conn.execute("DISCARD PLANS")


def check_plans(side, query):
    """EXPLAIN the k-NN query at every setting of the side; if the planner does not use the index,
    pgclient.index_plan turns enable_seqscan off for the rest of the session and notes it."""
    for setting in side.settings:
        apply(side, setting)
        # pgclient's messages name "the ivfpq index"; here it is the side's index.
        def own(text):
            return text.replace("the ivfpq index", f"the index {side.index}")
        plan, notes = pgclient.index_plan(side.conn, query, lambda p: uses_index(p, side.index), "l2", K,
                                          side.table, log=lambda m: log(f"{side.name}: {setting_label(setting)}: "
                                                                        + own(m)))
        side.plans[setting_label(setting)] = plan
        side.notes += [f"{LABELS[side.name]}, {setting_label(setting)}: " + own(n) for n in notes]
    first = side.plans[setting_label(side.settings[0])]
    log(f"{side.name}: plan {pgclient.plan_shape(first)} at every setting"
        if all(p == first for p in side.plans.values()) else f"{side.name}: plans differ between settings")


def schedule(sides, round_number):
    """The order of one round: each side's settings spread evenly over the round (setting k of a
    side with n settings sits at (k + 0.5) / n), sides alternating at equal positions;
    every other round reversed."""
    items = [((k + 0.5) / len(s.settings), order, s, k) for order, s in enumerate(sides) for k in range(len(s.settings))]
    items.sort(key=lambda x: (x[0], x[1]))
    out = [(s, k) for _, _, s, k in items]
    return out[::-1] if round_number % 2 else out


def measure(side, setting, queries, truth, warmup, check_plan):
    apply(side, setting)
    ids, lat = pgclient.run_queries(side.conn, queries, "l2", K, side.table, warmup=warmup)
    row = pgclient.latency_summary(lat)
    row["recall@10"] = datasets.recall_at(ids, truth)
    if check_plan:
        ex = executed_plan(side.conn, pgclient.knn_sql("l2", K, side.table).replace("%b", "$1"), queries[0])
        row["executed_shape"] = ex["plan"] and pgclient.plan_shape(ex["plan"])
        row["executed_uses_index"] = ex["plan"] is not None and uses_index(ex["plan"], side.index)
    return row


def run_rounds(sides, queries, truth, warmup, rounds):
    runs = []
    for r in range(rounds):
        load = [round(x, 2) for x in os.getloadavg()]
        log(f"== round {r + 1}/{rounds} (load average {', '.join(map(str, load))})")
        for side, k in schedule(sides, r):
            setting = side.settings[k]
            row = measure(side, setting, queries, truth, warmup, check_plan=(r == 0))
            row.update({"round": r + 1, "side": side.name, "setting": dict(setting), "label": setting_label(setting),
                        "order": k})
            runs.append(row)
            if row.get("executed_uses_index") is False:
                side.notes.append(f"{LABELS[side.name]}, {row['label']}: the prepared statement ran "
                                  f"{row['executed_shape']}, not the index {side.index}")
            log(f"{side.name:>8} {row['label']:22s} recall@10 {row['recall@10']:.3f}  QPS {row['qps']:8.1f}  "
                f"p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:6.2f} ms")
    for side in sides:
        side.conn.execute("RESET ALL")
    return runs


def summarize(runs):
    """Per (side, setting): medians over the rounds, and each round's QPS."""
    groups = {}
    for r in runs:
        groups.setdefault((r["side"], r["order"]), []).append(r)
    out = []
    for (side, order), rs in sorted(groups.items(), key=lambda kv: (SIDES.index(kv[0][0]), kv[0][1])):
        row = {"side": side, "setting": rs[0]["setting"], "label": rs[0]["label"], "rounds": len(rs),
               "qps_per_round": [r["qps"] for r in sorted(rs, key=lambda r: r["round"])]}
        for key in ("recall@10", "qps", "mean_ms", "p50_ms", "p99_ms"):
            row[key] = statistics.median(r[key] for r in rs)
        row["recall_min"], row["recall_max"] = min(r["recall@10"] for r in rs), max(r["recall@10"] for r in rs)
        out.append(row)
    return out


# --------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------

def ratio(a, b):
    return a / b if a is not None and b else None


def compare(result):
    """Best QPS per recall target per side (medians over the rounds), ratios ivfpq / HNSW and
    ivfpq / IVFFlat, the same ratio within each round, and sizes and build times."""
    summary, runs = result["summary"], result["runs"]
    rows = {s: [r for r in summary if r["side"] == s] for s in SIDES}
    rounds = sorted({r["round"] for r in runs})
    out = {"qps_at_recall": {}}
    for target in RECALL_TARGETS:
        best = {s: best_at(rows[s], target) for s in SIDES}
        entry = {s: best[s] for s in SIDES}
        for other in ("hnsw", "ivfflat"):
            entry[f"ivfpq_over_{other}"] = ratio(best["ivfpq"] and best["ivfpq"]["qps"], best[other] and best[other]["qps"])
            per_round = []
            for rnd in rounds:
                a = best_at([r for r in runs if r["side"] == "ivfpq" and r["round"] == rnd], target)
                b = best_at([r for r in runs if r["side"] == other and r["round"] == rnd], target)
                per_round.append(ratio(a and a["qps"], b and b["qps"]))
            entry[f"ivfpq_over_{other}_per_round"] = per_round
        out["qps_at_recall"][str(target)] = entry
    builds = result["builds"]
    iv, hn, ifl = builds.get("ivfpq"), builds.get("hnsw"), builds.get("ivfflat")
    out["index_size_ivfpq_over_hnsw"] = ratio(iv["index_bytes"], hn and hn["index_bytes"])
    out["index_size_ivfpq_over_ivfflat"] = ratio(iv["index_bytes"], ifl and ifl["index_bytes"])
    out["build_time_ivfpq_over_hnsw"] = ratio(iv["build_s"], hn and hn["build_s"])
    out["build_time_ivfpq_over_ivfflat"] = ratio(iv["build_s"], ifl and ifl["build_s"])
    q = out["qps_at_recall"][str(TARGET_RECALL)]
    out["targets"] = [
        target_row(f"QPS at recall@10 >= {TARGET_RECALL}: ivfpq / HNSW", f">= {TARGET_QPS_RATIO:g}",
                   q["ivfpq_over_hnsw"], lambda x: x >= TARGET_QPS_RATIO,
                   qps_detail(q) if builds.get("hnsw") else None, ".2f"),
        target_row("index size: ivfpq / HNSW", "<= 1/20 = 0.050", out["index_size_ivfpq_over_hnsw"],
                   lambda x: x <= TARGET_SIZE_RATIO,
                   hn and f"{mib(iv['index_bytes'])} / {mib(hn['index_bytes'])}", ".3f"),
        target_row("build time: ivfpq / HNSW", "<= 1/5 = 0.200", out["build_time_ivfpq_over_hnsw"],
                   lambda x: x <= TARGET_BUILD_RATIO,
                   hn and f"{iv['build_s']:.1f} s / {hn['build_s']:.1f} s", ".3f"),
    ]
    return out


def qps_detail(q):
    a, b = q["ivfpq"], q["hnsw"]
    if not (a and b):
        return f"ivfpq {best_text(a)}, HNSW {best_text(b)}"
    per_round = ", ".join(fmt(x, ".2f") for x in q["ivfpq_over_hnsw_per_round"])
    return (f"{a['qps']:.0f} QPS ({a['label']}, recall {a['recall@10']:.3f}) / {b['qps']:.0f} QPS ({b['label']}, "
            f"recall {b['recall@10']:.3f}); per round {per_round}")


def target_row(name, needed, value, ok, detail, spec):
    met = None if value is None else bool(ok(value))
    return {"target": name, "needed": needed, "value": value, "met": met, "detail": detail,
            "value_text": fmt(value, spec)}


def met_text(met, skipped):
    if met is None:
        return "not measured (pgvector side skipped)" if skipped else "not measurable (recall not reached)"
    return "**met**" if met else "**not met**"


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def best_text(row):
    return f"{row['qps']:.1f} ({row['label']}, {row['recall@10']:.3f})" if row else "not reached"


def summary_lines(result):
    out = list(result["notes"])
    cmp_, skipped = result["comparison"], not result.get("pgvector")
    if skipped:
        out.append("pgvector side skipped (no --pgvector PATH given): ivfpq measured alone")
    for name, b in result["builds"].items():
        out.append(f"{LABELS[name]}: CREATE INDEX {b['build_s']:.1f} s, index {mib(b['index_bytes'])}")
    for target, c in cmp_["qps_at_recall"].items():
        parts = [f"{LABELS[s]} {c[s]['qps']:.1f} QPS ({c[s]['label']})" if c[s] else f"{LABELS[s]} not reached"
                 for s in SIDES if s == "ivfpq" or not skipped]
        ratios = "" if skipped else (f"; ivfpq / HNSW {fmt(c['ivfpq_over_hnsw'], '.2f')}, "
                                     f"ivfpq / IVFFlat {fmt(c['ivfpq_over_ivfflat'], '.2f')}")
        out.append(f"recall@10 >= {target}: " + ", ".join(parts) + ratios)
    for t in cmp_["targets"]:
        out.append(f"target {t['target']} {t['needed']}: {t['value_text']} -> "
                   f"{met_text(t['met'], skipped).replace('**', '')}" + (f" ({t['detail']})" if t["detail"] else ""))
    return out


def sweep_table(rows):
    lines = ["| setting | recall@10 | QPS (median) | QPS per round | mean ms | p50 ms | p99 ms |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        recall = f"{r['recall@10']:.3f}" + ("" if r["recall_min"] == r["recall_max"]
                                            else f" ({r['recall_min']:.3f}-{r['recall_max']:.3f})")
        lines.append(f"| {r['label']} | {recall} | {r['qps']:.1f} | {', '.join(f'{x:.0f}' for x in r['qps_per_round'])} "
                     f"| {r['mean_ms']:.2f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    return lines + [""]


def markdown(result):
    ds, args, cmp_ = result["dataset"], result["args"], result["comparison"]
    pv, skipped = result.get("pgvector"), not result.get("pgvector")
    title = f"ivfpq vs pgvector: {ds['name']} ({ds['rows']} x {ds['dim']}, l2)"
    lines = ivfpq_bench.wrapped_report_head(title, result)
    env = result["environment"]
    if pv:
        p = env["pgvector"]
        lines.append(f"- pgvector: checkout {p['path']} ({p.get('git')}, version {p.get('version')}), installed "
                     f"{p.get('installed_version')} (extversion {pv['extversion']}), vector.so sha256 "
                     f"{p.get('installed_sha256')} (same as the checkout's build: {p.get('same_as_checkout_build')}); "
                     f"database {pv['database']}; settings: " + ", ".join(f"{k} = {v}" for k, v in pv["settings"].items()))
    else:
        lines.append("- pgvector: **skipped** (no `--pgvector PATH` given); only ivfpq was measured")
    lines += [f"- queries: {result['nqueries']} query vectors per measurement, `SELECT id FROM <table> ORDER BY "
              "embedding <-> $1 LIMIT 10`, one at a time through one prepared statement with a binary vector "
              f"parameter, one connection per index, {args['warmup']} untimed queries (other vectors) before each "
              "measurement; recall@10 against exact ground truth (float64 brute force)",
              f"- interleaving: {args['rounds']} round(s); in each, every setting of every side once, the sides "
              "alternating (each side's settings spread evenly over the round), every other round in reverse "
              "order; figures per setting are medians over the rounds",
              "- builds: every CREATE INDEX after a CHECKPOINT, with maintenance_work_mem = "
              f"{result['builds']['ivfpq']['maintenance_work_mem']} and max_parallel_maintenance_workers = "
              f"{result['builds']['ivfpq']['max_parallel_maintenance_workers']} (the same for each; listed below)",
              f"- table options: {args['table_options'] or '(none)'} on every table", ""]
    lines += ["## Summary", ""] + [f"- {s}" for s in summary_lines(result)] + [""]

    lines += [f"## Issue 9, target 2 (at recall@10 >= {TARGET_RECALL})", "",
              "| target | needed | measured | | figures |", "|---|---|---|---|---|"]
    for t in cmp_["targets"]:
        lines.append(f"| {t['target']} | {t['needed']} | {t['value_text']} | {met_text(t['met'], skipped)} "
                     f"| {t['detail'] or ''} |")
    lines.append("")

    lines += ["## Best QPS at a recall target", "",
              "Best median QPS among the settings whose median recall@10 reaches the target (setting, recall); "
              "the ratio per round compares the best settings of that round alone.", "",
              "| recall@10 >= | ivfpq | pgvector HNSW | pgvector IVFFlat | ivfpq / HNSW | per round "
              "| ivfpq / IVFFlat | per round |", "|---|---|---|---|---|---|---|---|"]
    for target, c in cmp_["qps_at_recall"].items():
        lines.append(f"| {target} | {best_text(c['ivfpq'])} | {best_text(c['hnsw']) if pv else 'skipped'} | "
                     f"{best_text(c['ivfflat']) if pv else 'skipped'} | {fmt(c['ivfpq_over_hnsw'], '.2f')} | "
                     f"{', '.join(fmt(x, '.2f') for x in c['ivfpq_over_hnsw_per_round']) if pv else '–'} | "
                     f"{fmt(c['ivfpq_over_ivfflat'], '.2f')} | "
                     f"{', '.join(fmt(x, '.2f') for x in c['ivfpq_over_ivfflat_per_round']) if pv else '–'} |")
    lines.append("")

    lines += ["## Builds and sizes", "",
              "| index | CREATE INDEX | maintenance_work_mem | max_parallel_maintenance_workers | build s "
              "| index size | table | table size | index / table |", "|---|---|---|---|---|---|---|---|---|"]
    tables = dict(result["tables"]["ivfpq"])
    pv_tables = pv["tables"] if pv else {}
    for name, b in result["builds"].items():
        t = (tables if name == "ivfpq" else pv_tables)[b.get("table", TABLE)]
        lines.append(f"| {LABELS[name]} | `{b['sql']}` | {b['maintenance_work_mem']} | "
                     f"{b['max_parallel_maintenance_workers']} | {b['build_s']:.1f} | {mib(b['index_bytes'])} | "
                     f"{t['table']} | {mib(t['table_bytes'])} | {b['index_bytes'] / t['table_bytes']:.3f} |")
    lines.append("")
    if pv:
        lines += [f"Ratios ivfpq / HNSW: index size {fmt(cmp_['index_size_ivfpq_over_hnsw'])}, build time "
                  f"{fmt(cmp_['build_time_ivfpq_over_hnsw'])}; ivfpq / IVFFlat: index size "
                  f"{fmt(cmp_['index_size_ivfpq_over_ivfflat'])}, build time {fmt(cmp_['build_time_ivfpq_over_ivfflat'])}.",
                  ""]
    for name, b in result["builds"].items():
        if b["notices"]:
            lines += [f"NOTICEs of the {LABELS[name]} build: " + " / ".join(b["notices"]), ""]
    stats = result["builds"]["ivfpq"].get("stats")
    if stats:
        lines += ["ivfpq_index_stats: " + ", ".join(f"{k} = {v}" for k, v in stats.items()), ""]
    lines += ["| side | table | load (COPY, primary key, VACUUM ANALYZE) | embedding storage | mean bytes per "
              "stored vector (pg_column_size) / raw |", "|---|---|---|---|---|"]
    raw = 8 + 4 * ds["dim"]
    for side, ts in (("ivfpq", tables), ("pgvector", pv_tables)):
        for t in ts.values():
            load = f"{t['load_s']:.1f} s" if t.get("load_s") is not None else f"copy of {TABLE}, {t['copy_s']:.1f} s"
            lines.append(f"| {side} | {t['table']} | {load} | {t['storage']} | {t['avg_vector_bytes']:.0f} / {raw} |")
    lines.append("")

    lines += ["## Every setting (medians over the rounds)", ""]
    for s in SIDES:
        rows = [r for r in result["summary"] if r["side"] == s]
        if rows:
            lines += [f"### {LABELS[s]}", ""] + sweep_table(rows)

    lines += ["## Plans", "", "EXPLAIN (COSTS OFF) of the first query vector at the first setting (the plan was "
              "checked at every setting; the prepared statement's plan was checked in the first round).", ""]
    for s, plan in result["plans"].items():
        lines += [f"{LABELS[s]}:", "", "```", plan, "```", ""]

    lines += ["## Every measurement, in the order run", "",
              "| round | side | setting | recall@10 | QPS | p50 ms | p99 ms |", "|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        lines.append(f"| {r['round']} | {r['side']} | {r['label']} | {r['recall@10']:.3f} | {r['qps']:.1f} | "
                     f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    ds = datasets.load(args.dataset).limit(args.base_limit)
    nq = min(args.nqueries, ds.queries.shape[0])
    queries = np.asarray(ds.queries[:nq], dtype=np.float32)
    # Warm-up queries come from outside the measured set when there are enough.
    spare = pgclient.warmup_queries(ds, nq, args.warmup)
    truth = ds.ground_truth("l2")[:nq]
    base = ds.base
    log(f"dataset {ds.name}: {base.shape[0]} x {ds.dim}, {nq} queries, metric l2, {args.rounds} round(s)")
    if not args.pgvector:
        log("pgvector side SKIPPED: no --pgvector PATH given (a pgvector checkout, built and installed); "
            "measuring ivfpq alone")

    conn = psycopg.connect(args.dsn, autocommit=True)
    conns = []
    try:
        pgclient.ensure_ivfpq(conn)
        environment = ivfpq_bench.machine_notes(conn)
        environment["wrapper"] = ivfpq_bench.wrapper_command("vs_pgvector.py", "vs_pgvector.sh")
        result = {"dataset": {"name": ds.name, "rows": int(base.shape[0]), "dim": int(ds.dim)},
                  "args": vars(args), "nqueries": nq, "environment": environment,
                  "settings": ivfpq_bench.server_settings(conn), "notes": []}
        if args.pgvector:
            checkout = pgvector_checkout(args.pgvector)
            checkout.update(pgvector_installed(conn, checkout))
            environment["pgvector"] = checkout
        else:
            result["notes"].append("pgvector side skipped: no --pgvector PATH given")

        iv = setup_ivfpq(conn, base, args)
        result["tables"] = {"ivfpq": iv["tables"]}
        result["builds"] = dict(iv["builds"])
        lists = (iv["builds"]["ivfpq"].get("stats") or {}).get("lists") or args.lists
        ivfpq_settings = [[("ivfpq.probes", p), ("ivfpq.rerank", r)]
                          for p, r in ivfpq_bench.sweep_settings(args.probes, args.rerank, lists)]
        sides = [Side("ivfpq", conn, TABLE, "items_embedding_ivfpq", ivfpq_settings)]

        if args.pgvector:
            conn.execute(f"DROP DATABASE IF EXISTS {args.pgvector_db} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {args.pgvector_db}")
            dsn = conninfo.make_conninfo(args.dsn, dbname=args.pgvector_db)
            pconn = psycopg.connect(dsn, autocommit=True)
            conns.append(pconn)
            ivfflat_lists = args.ivfflat_lists or lists
            if not ivfflat_lists:
                raise SystemExit("the ivfpq index's lists are unknown (ivfpq_index_stats failed): give --ivfflat-lists")
            pv = setup_pgvector(pconn, base, args, ivfflat_lists)
            result["pgvector"] = {k: v for k, v in pv.items() if k != "builds"}
            result["builds"].update(pv["builds"])
            # One connection per index, so that the settings of one never reach another.
            fconn = psycopg.connect(dsn, autocommit=True)
            conns.append(fconn)
            for c in (pconn, fconn):
                pgclient.register_vector(c)
            sides.append(Side("hnsw", pconn, TABLE, pv["builds"]["hnsw"]["index"],
                              [[("hnsw.ef_search", e)] for e in args.ef_search]))
            sides.append(Side("ivfflat", fconn, IVFFLAT_TABLE, pv["builds"]["ivfflat"]["index"],
                              [[("ivfflat.probes", p)] for p in args.ivfflat_probes if p <= ivfflat_lists]))
        for s in sides:
            if not s.settings:
                raise SystemExit(f"{s.name}: no setting left to measure (all above the index's lists?)")
            check_plans(s, queries[0])
        result["plans"] = {s.name: s.plans[setting_label(s.settings[0])] for s in sides}
        result["sweeps"] = {s.name: [setting_label(x) for x in s.settings] for s in sides}

        result["runs"] = run_rounds(sides, queries, truth, spare, args.rounds)
        for s in sides:
            result["notes"] += s.notes
        result["summary"] = summarize(result["runs"])
        result["comparison"] = compare(result)
        ivfpq_bench.finish_environment(conn, environment, result["notes"])
    finally:
        for c in conns:
            c.close()
        if args.pgvector:
            try:
                conn.execute(f"DROP DATABASE IF EXISTS {args.pgvector_db} WITH (FORCE)")
            except psycopg.Error as e:
                log(f"pgvector: could not drop database {args.pgvector_db}: {e}")
        conn.close()

    path = args.results or ivfpq_bench.default_results_path(ds.name, "vs-pgvector-")
    ivfpq_bench.write_results(result, path, markdown(result), summary_lines(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
