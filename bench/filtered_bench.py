#!/usr/bin/python3
"""Filtered vector queries (issue 9), tried as a new user would:

    SELECT id FROM items WHERE category ... ORDER BY embedding <-> $1 LIMIT 10

at 10%, 1% and 0.1% selectivity, against the same query without a filter.

Steps, on one cluster, in one run:
  1. data: --rows (100,000) x --dim (64) float32 vectors drawn from --clusters
     (100) Gaussian clusters with random centres, random spreads and Zipf sizes
     (numpy, --seed); a category per row drawn uniformly from 0..999,
     independently of the vector; --queries (200) query vectors (and --warmup
     more) from the same distribution, on a random stream of their own;
  2. table items (id int PRIMARY KEY, category int, embedding vector(64)), rows
     written by binary COPY (through a staging table, then in id order),
     VACUUM ANALYZE; then, as the README shows it,
       CREATE INDEX ON items USING ivfpq (embedding) WITH (lists = 100)
     (default m), and with --category-index a btree on category; ANALYZE items.
     Then (unless --no-multicolumn) items_multi, a copy of items, with
       CREATE INDEX ON items_multi USING ivfpq (embedding, category) WITH (lists = 100)
     whose scan checks the category condition on the index entries before
     re-ranking (filter columns; measured as "ivfpq (embedding, category)").
     ivfpq.probes / ivfpq.rerank stay at their defaults unless --probes /
     --rerank are given;
  3. filters: none, category < 100 (10%), category < 10 (1%), category = 0
     (0.1%). For each, EXPLAIN of one query: the plan the planner chooses. When
     it is not a scan of the vector index, that plan is measured (marked
     "planner") and the query is ALSO measured with enable_seqscan = off and
     enable_bitmapscan = off (marked "forced") so that the index path is
     measured too. (With --category-index the forced plan may still not be the
     vector index: a plain index scan of the btree and a sort; the report says
     so. The default run, without the btree, measures the vector index path.)
  4. measurements in --rounds (3) rounds, each round every configuration and
     every filter in turn (unfiltered, 10%, 1%, 0.1%), so the noise of this
     shared machine spreads over all of them; one connection per side, one
     query at a time through a prepared statement with a binary vector
     parameter, --warmup untimed queries first. Figures are the median of the
     rounds: recall@10 against the exact answer of the same filtered query
     (float64 brute force in numpy over the rows passing the filter; a returned
     row is a hit when its exact distance is at most the 10th true distance, so
     ties do not count as misses), mean rows returned (10 unless the scan gave
     up early), QPS, p50 / p99 latency, and the latency ratio filtered /
     unfiltered (per round, then the median);
  5. with --pgvector PATH (a pgvector checkout built and installed with make &&
     make install; pgvector's extension is also named `vector` and defines a
     type `vector`, so it lives in a database of its own, --pgvector-db): the
     same rows and queries on pgvector's HNSW (--hnsw-options, m = 16,
     ef_construction = 64) with hnsw.iterative_scan = relaxed_order and off,
     and IVFFlat (--ivfflat-lists, default --lists, on a copy of the table so
     that the planner never chooses between the two) with
     ivfflat.iterative_scan = relaxed_order and off (--pgvector-indexes);
  6. figures printed and written to bench/results/filtered-<date>.{md,json}
     (--results overrides).

    bash bench/filtered.sh                                   # full size (estimated ~1-2 min; ~4 with --pgvector)
    bash bench/filtered.sh --pgvector /work/pgvector
    bash bench/filtered.sh --queries 20 --rounds 1           # smoke run

Connection: --dsn, or the libpq environment (PGHOST, PGPORT, ...); normally
started by bench/filtered.sh, which provides a throwaway cluster.
"""

import argparse
import os
import re
import statistics
import sys
import time

import numpy as np
import psycopg
from psycopg import conninfo
from psycopg import sql as pgsql

import ivfpq_bench
import pgclient
from churn_bench import pgvector_checkout, pgvector_installed, sq_dist
from ivfpq_bench import K, fmt, log, mib

TABLE = "items"
IVFFLAT_TABLE = "items_ivfflat"
MULTI_TABLE = "items_multi"
MULTI_NAME = "ivfpq (embedding, category)"
CATEGORIES = 1000
# (name, WHERE clause, rows passing as a function of the category array)
CASES = (("unfiltered", None, None),
         ("10%", "category < 100", lambda c: c < 100),
         ("1%", "category < 10", lambda c: c < 10),
         ("0.1%", "category = 0", lambda c: c == 0))
FORCE = (("enable_seqscan", "off"), ("enable_bitmapscan", "off"))
PGVECTOR_INDEXES = ("hnsw", "ivfflat")
# A returned row is a hit when its exact squared distance is at most the 10th true one
# times (1 + REL_EPS): the server ranks in float32, the truth here is float64.
REL_EPS = 1e-5


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", nargs="?", default="clustered", choices=["clustered"],
                    help="the data: generated here, Gaussian clusters (the only one; default)")
    ap.add_argument("--rows", type=int, default=100_000, help="rows (default %(default)s)")
    ap.add_argument("--dim", type=int, default=64, help="dimensions (default %(default)s)")
    ap.add_argument("--clusters", type=int, default=100, help="Gaussian clusters (default %(default)s)")
    ap.add_argument("--seed", type=int, default=42, help="seed of the data (default %(default)s)")
    ap.add_argument("--queries", "--nqueries", dest="queries", type=int, default=200,
                    help="query vectors per measurement (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=20,
                    help="untimed queries before each measurement, other vectors (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds; each measures every configuration and filter once (default %(default)s)")
    ap.add_argument("--lists", type=int, default=100, help="ivfpq lists (default %(default)s)")
    ap.add_argument("--m", type=int, help="ivfpq m (default: the index's own)")
    ap.add_argument("--probes", type=int, help="SET ivfpq.probes (default: not set, the server's default)")
    ap.add_argument("--rerank", type=int, help="SET ivfpq.rerank (default: not set, the server's default)")
    ap.add_argument("--no-multicolumn", dest="multicolumn", action="store_false",
                    help="skip the multicolumn ivfpq index (embedding, category) on a copy of the table")
    ap.add_argument("--category-index", action="store_true",
                    help="also CREATE INDEX ON items (category) (a btree; on every table, both sides)")
    ap.add_argument("--pgvector", metavar="PATH",
                    help="a pgvector checkout, built and installed (make && make install): adds pgvector's "
                    "hnsw and ivfflat with iterative scans, in a database of their own")
    ap.add_argument("--pgvector-db", default="filtered_pgvector",
                    help="database created (dropped first, and at the end) for pgvector (default %(default)s)")
    ap.add_argument("--pgvector-indexes", default=",".join(PGVECTOR_INDEXES),
                    help="pgvector indexes measured: hnsw, ivfflat (default %(default)s)")
    ap.add_argument("--hnsw-options", default="m = 16, ef_construction = 64",
                    help="hnsw WITH (...) options (default: pgvector's defaults, %(default)s)")
    ap.add_argument("--ivfflat-lists", type=int, help="ivfflat lists (default: --lists)")
    ap.add_argument("--dsn", default="", help="libpq connection string (default: libpq environment)")
    ap.add_argument("--results", help="output path (.md and .json written next to each other); "
                    "default bench/results/filtered-<date>")
    args = ap.parse_args(argv)
    args.pgvector_indexes = [p.strip() for p in args.pgvector_indexes.split(",") if p.strip()]
    for p in args.pgvector_indexes:
        if p not in PGVECTOR_INDEXES:
            ap.error(f"--pgvector-indexes: unknown index {p!r} (expected {', '.join(PGVECTOR_INDEXES)})")
    if min(args.rows, args.dim, args.clusters, args.queries, args.rounds, args.lists) < 1 or args.warmup < 0:
        ap.error("--rows, --dim, --clusters, --queries, --rounds and --lists must be positive")
    if args.pgvector and not os.path.isfile(os.path.join(args.pgvector, "vector.control")):
        ap.error(f"--pgvector {args.pgvector}: no vector.control there (not a pgvector checkout)")
    args.ivfflat_lists = args.ivfflat_lists or args.lists
    return args


# --------------------------------------------------------------------------
# Data and exact answers
# --------------------------------------------------------------------------

class Clusters:
    """Gaussian clusters: random centres (N(0, 1) per coordinate), a random spread per cluster
    (standard deviation per coordinate, uniform in 0.5..1), Zipf sizes (weight 1 / rank)."""

    def __init__(self, n, dim, seed):
        rng = np.random.default_rng([seed, 0])
        self.centres = rng.normal(0.0, 1.0, (n, dim))
        self.spread = rng.uniform(0.5, 1.0, n)
        weights = 1.0 / np.arange(1, n + 1)
        self.weights = rng.permutation(weights / weights.sum())

    def draw(self, rows, rng):
        """rows vectors (float32) and the cluster of each."""
        which = rng.choice(len(self.weights), size=rows, p=self.weights)
        noise = rng.standard_normal((rows, self.centres.shape[1]))
        return (self.centres[which] + noise * self.spread[which, None]).astype(np.float32), which


def make_data(args):
    """(vectors, categories, queries, warm-up queries): separate random streams for the
    rows, the categories and the queries."""
    clusters = Clusters(args.clusters, args.dim, args.seed)
    vectors, which = clusters.draw(args.rows, np.random.default_rng([args.seed, 1]))
    categories = np.random.default_rng([args.seed, 2]).integers(0, CATEGORIES, args.rows).astype(np.int32)
    queries, _ = clusters.draw(args.queries + args.warmup, np.random.default_rng([args.seed, 3]))
    sizes = np.bincount(which, minlength=args.clusters)
    return vectors, categories, queries[:args.queries], queries[args.queries:], sizes


class Truth:
    """The 10th smallest exact squared distance of each query over the rows passing each filter
    (float64 brute force), and recall by distance."""

    def __init__(self, vectors, categories, queries, chunk=100):
        self.X = np.asarray(vectors, dtype=np.float64)
        self.Q = np.asarray(queries, dtype=np.float64)
        self.passing = {name: (np.ones(len(categories), dtype=bool) if f is None else f(categories))
                        for name, _, f in CASES}
        self.kth = {name: np.empty(len(self.Q)) for name in self.passing}
        for s in range(0, len(self.Q), chunk):
            d = sq_dist(self.Q[s:s + chunk], self.X)
            for name, mask in self.passing.items():
                sub = d[:, mask]
                k = min(K, sub.shape[1])
                self.kth[name][s:s + chunk] = np.partition(sub, k - 1, axis=1)[:, k - 1]

    def score(self, case, found):
        """(recall@10, mean rows returned, min rows returned, rows not passing the filter)."""
        hits, wrong = 0, 0
        passing, kth = self.passing[case], self.kth[case]
        for q, ids in enumerate(found):
            ids = np.unique(np.asarray(ids, dtype=np.int64))
            wrong += int((~passing[ids]).sum())
            ids = ids[passing[ids]]
            d = ((self.X[ids] - self.Q[q]) ** 2).sum(1)
            hits += min(K, int((d <= kth[q] * (1 + REL_EPS)).sum()))
        rows = [len(f) for f in found]
        need = min(K, int(passing.sum()))
        return hits / (need * len(found)), float(np.mean(rows)), int(min(rows)), wrong


# --------------------------------------------------------------------------
# Tables and indexes
# --------------------------------------------------------------------------

def load_items(conn, vectors, categories, table=TABLE, prefix="pg"):
    """(Re)create `table` (id int PRIMARY KEY, category int, embedding vector(d)): the vectors
    by binary COPY into a staging table (pgclient.copy_into), then written once in id order
    with their categories, VACUUM ANALYZE. Returns the seconds taken."""
    n, dim = vectors.shape
    log(f"{prefix}: loading {n} rows into {table} (binary COPY)")
    t0 = time.perf_counter()
    stage = f"{table}_load"
    conn.execute(f"DROP TABLE IF EXISTS {table}, {stage}")
    conn.execute(f"CREATE UNLOGGED TABLE {stage} (id int NOT NULL, embedding vector({dim}))")
    pgclient.copy_into(conn, stage, np.arange(n), vectors, log=log)
    conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, category int, embedding vector({dim}))")
    conn.execute(f"INSERT INTO {table} (id, category, embedding) SELECT s.id, c.category, s.embedding "
                 f"FROM {stage} s JOIN unnest(%s::int[]) WITH ORDINALITY AS c (category, n) ON c.n = s.id + 1 "
                 "ORDER BY s.id", (categories.tolist(),))
    conn.execute(f"DROP TABLE {stage}")
    conn.execute(f"VACUUM (ANALYZE) {table}")
    secs = time.perf_counter() - t0
    log(f"{prefix}: loaded in {secs:.1f} s")
    return secs


def copy_table(conn, source, table):
    """A copy of `source` (same columns, primary key but no other index, rows in the same order),
    VACUUM ANALYZE."""
    t0 = time.perf_counter()
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(f"CREATE TABLE {table} (LIKE {source} INCLUDING ALL EXCLUDING INDEXES)")
    conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id)")
    conn.execute(f"INSERT INTO {table} SELECT * FROM {source} ORDER BY id")
    conn.execute(f"VACUUM (ANALYZE) {table}")
    return time.perf_counter() - t0


def index_named(conn, table, am, column):
    """The name of `table`'s index of access method `am` on `column`."""
    return conn.execute(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_am a ON a.oid = c.relam JOIN pg_attribute t ON t.attrelid = i.indrelid AND t.attnum = i.indkey[0] "
        "WHERE i.indrelid = %s::regclass AND a.amname = %s AND t.attname = %s",
        (table, am, column)).fetchone()[0]


def build_index(conn, table, am, column, with_clause="", prefix="pg"):
    """CREATE INDEX ON table USING am (column) [WITH (...)], timed after a CHECKPOINT (its
    NOTICEs logged); return its figures."""
    using = "" if am == "btree" else f" USING {am}"
    sql = f"CREATE INDEX ON {table}{using} ({column})" + (f" WITH ({with_clause})" if with_clause else "")
    conn.execute("CHECKPOINT")
    log(f"{prefix}: {sql}")
    secs, notices = ivfpq_bench.timed_with_notices(conn, sql, prefix, table)
    name = index_named(conn, table, am, column.split(",")[0].split()[0])
    size = conn.execute("SELECT pg_relation_size(%s::regclass)", (name,)).fetchone()[0]
    log(f"{prefix}: CREATE INDEX {name} {secs:.1f} s, {mib(size)}")
    return {"index": name, "am": am, "sql": sql, "build_s": secs, "index_bytes": size, "notices": notices}


def finish_table(conn, table, indexes):
    """ANALYZE, then load the table and its indexes into shared buffers (pg_prewarm)."""
    conn.execute(f"ANALYZE {table}")
    for rel in [table] + [i["index"] for i in indexes]:
        pgclient.prewarm(conn, rel)
    return conn.execute("SELECT pg_table_size(%s::regclass)", (table,)).fetchone()[0]


# --------------------------------------------------------------------------
# Configurations, plans, measurements
# --------------------------------------------------------------------------

class Target:
    """One configuration measured: a side's connection, a table, its vector index and the
    settings SET before each measurement."""

    def __init__(self, side, name, conn, table, index, settings):
        self.side, self.name, self.conn, self.table, self.index = side, name, conn, table, index
        self.settings = list(settings)


def source(table, where):
    """pgclient's k-NN helpers (knn_sql, run_queries, explain) put their `table` argument right
    after FROM, so the WHERE clause goes with it."""
    return f"{table} WHERE {where}" if where else table


def query_text(target, where):
    return pgclient.knn_sql("l2", K, source(target.table, where)).replace("%b", "$1")


def configure(target, forced):
    """RESET ALL, then the target's settings (and the forcing ones); DISCARD PLANS so that no
    plan cached under other settings is reused (a setting does not invalidate cached plans)."""
    conn = target.conn
    conn.execute("RESET ALL")
    for name, value in target.settings + (list(FORCE) if forced else []):
        conn.execute(f"SET {name} = {value}")
    conn.execute("DISCARD PLANS")


def uses_index(plan, index):
    return re.search(rf"\busing {re.escape(index)}\b", plan) is not None


def explain_analyze(conn, query, src):
    """EXPLAIN (ANALYZE) of one k-NN query, with row counts but no timings."""
    with conn.cursor() as cur:
        cur.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + pgclient.knn_sql("l2", K, src),
                    (pgclient.Vector(query),))
        text = "\n".join(r[0] for r in cur.fetchall())
    return re.sub(r"'\[[^']*\]'::vector", "'[...]'::vector", text)


def executed_plan(conn, text, query):
    """The plan the prepared statement of `text` runs now (EXPLAIN EXECUTE: generic or custom,
    as the plan cache decides) and its generic / custom plan counts (pg_prepared_statements)."""
    row = conn.execute("SELECT name, generic_plans, custom_plans FROM pg_prepared_statements "
                       "WHERE statement = %s", (text,)).fetchone()
    if row is None:
        return {"plan": None, "generic_plans": None, "custom_plans": None}
    # EXECUTE takes no protocol-level parameter: the vector goes in as a literal.
    literal = "[" + ",".join(repr(float(x)) for x in np.asarray(query, dtype=np.float32)) + "]"
    stmt = pgsql.SQL("EXPLAIN (COSTS OFF) EXECUTE {}({})").format(pgsql.Identifier(row[0]), pgsql.Literal(literal))
    plan = "\n".join(r[0] for r in conn.execute(stmt).fetchall())
    return {"plan": plan, "generic_plans": row[1], "custom_plans": row[2]}


def plans_for(target, query):
    """For each filter: the planner's plan, whether it scans the vector index, and if not the
    plan with the forcing settings. Returns {case: {...}} and the variants to measure."""
    out, variants = {}, {}
    for case, where, _ in CASES:
        src = source(target.table, where)
        configure(target, False)
        plan = pgclient.explain(target.conn, query, "l2", K, src)
        p = {"sql": query_text(target, where), "planner_plan": plan, "planner_shape": pgclient.plan_shape(plan),
             "planner_uses_index": uses_index(plan, target.index)}
        variants[case] = ["planner"]
        if not p["planner_uses_index"]:
            configure(target, True)
            forced = pgclient.explain(target.conn, query, "l2", K, src)
            p.update({"forced_plan": forced, "forced_shape": pgclient.plan_shape(forced),
                      "forced_uses_index": uses_index(forced, target.index)})
            variants[case].append("forced")
            log(f"{target.name}: {case}: the planner chose {p['planner_shape']}, not {target.index}; also measured "
                f"with {', '.join(f'{n} = {v}' for n, v in FORCE)}: {p['forced_shape']}"
                + ("" if p["forced_uses_index"] else f" (STILL NOT {target.index})"))
        else:
            log(f"{target.name}: {case}: {p['planner_shape']}")
        out[case] = p
    configure(target, False)
    return out, variants


def measure(target, case, where, variant, queries, warmup, truth):
    """One measurement: settings, warm-up, the timed queries one at a time; figures and the
    plan the prepared statement ran."""
    configure(target, variant == "forced")
    src = source(target.table, where)
    ids, lat = pgclient.run_queries(target.conn, queries, "l2", K, src, warmup=warmup)
    row = pgclient.latency_summary(lat)
    recall, rows, min_rows, wrong = truth.score(case, ids)
    row.update({"recall@10": recall, "rows_mean": rows, "rows_min": min_rows, "rows_not_passing": wrong})
    ex = executed_plan(target.conn, query_text(target, where), queries[0])
    row.update({"executed_shape": ex["plan"] and pgclient.plan_shape(ex["plan"]),
                "executed_uses_index": ex["plan"] is not None and uses_index(ex["plan"], target.index),
                "generic_plans": ex["generic_plans"], "custom_plans": ex["custom_plans"]})
    return row, ex["plan"]


def run_rounds(targets, variants, queries, warmup, truth, rounds, plans):
    """Every round: each target, each filter (unfiltered, 10%, 1%, 0.1%), each variant."""
    runs = []
    for r in range(rounds):
        log(f"== round {r + 1}/{rounds}")
        for t in targets:
            for case, where, _ in CASES:
                for variant in variants[t.name][case]:
                    row, executed = measure(t, case, where, variant, queries, warmup, truth)
                    row.update({"round": r + 1, "target": t.name, "side": t.side, "case": case, "variant": variant})
                    runs.append(row)
                    p = plans[t.name][case]
                    if r == 0:
                        p.setdefault("executed_plan", {})[variant] = executed
                        p.setdefault("explain_analyze", {})[variant] = explain_analyze(
                            t.conn, queries[0], source(t.table, where))
                    log(f"{t.name:28s} {case:10s} {variant:7s} recall@10 {row['recall@10']:.3f}  rows "
                        f"{row['rows_mean']:5.2f}  QPS {row['qps']:8.1f}  p50 {row['p50_ms']:7.2f} ms  "
                        f"p99 {row['p99_ms']:7.2f} ms  [{row['executed_shape']}]")
    for t in targets:
        configure(t, False)
    return runs


def summarize(runs):
    """Median over the rounds of each (target, filter, variant), and the latency ratios
    filtered / unfiltered (the unfiltered planner measurement of the same target and round),
    median over the rounds."""
    base = {(r["target"], r["round"]): r for r in runs if r["case"] == "unfiltered" and r["variant"] == "planner"}
    groups = {}
    for r in runs:
        groups.setdefault((r["target"], r["case"], r["variant"]), []).append(r)
    out = []
    for (target, case, variant), rs in groups.items():
        row = {"target": target, "side": rs[0]["side"], "case": case, "variant": variant, "rounds": len(rs)}
        for key in ("recall@10", "rows_mean", "qps", "mean_ms", "p50_ms", "p99_ms"):
            row[key] = statistics.median(r[key] for r in rs)
        row["rows_min"] = min(r["rows_min"] for r in rs)
        row["rows_not_passing"] = sum(r["rows_not_passing"] for r in rs)
        row["executed_shapes"] = sorted({r["executed_shape"] or "?" for r in rs})
        row["executed_uses_index"] = all(r["executed_uses_index"] for r in rs)
        for key in ("p50_ms", "mean_ms", "p99_ms"):
            ratios = [r[key] / base[(target, r["round"])][key] for r in rs if (target, r["round"]) in base]
            row[key.replace("_ms", "_ratio")] = statistics.median(ratios) if ratios else None
        out.append(row)
    return out


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def measured_label(row):
    if row["variant"] == "planner":
        return "planner's plan" + ("" if row["executed_uses_index"] else " (not the vector index)")
    return "forced (" + ", ".join(f"{n} = {v}" for n, v in FORCE) + ")" + \
        ("" if row["executed_uses_index"] else ": still not the vector index")


def summary_lines(result):
    out = list(result["notes"])
    for row in result["summary"]:
        if row["case"] == "unfiltered":
            out.append(f"{row['target']}, unfiltered: recall@10 {row['recall@10']:.3f}, {row['rows_mean']:.1f} rows, "
                       f"{row['qps']:.0f} QPS, p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms")
            continue
        short = "" if row["rows_mean"] >= K else f" (FEWER THAN {K}: min {row['rows_min']})"
        out.append(f"{row['target']}, {row['case']} ({row['variant']}, {row['executed_shapes'][0]}): recall@10 "
                   f"{row['recall@10']:.3f}, {row['rows_mean']:.1f} rows{short}, {row['qps']:.0f} QPS, "
                   f"p50 {row['p50_ms']:.2f} ms (x{fmt(row['p50_ratio'], '.2f')} unfiltered), "
                   f"p99 {row['p99_ms']:.2f} ms (x{fmt(row['p99_ratio'], '.2f')})")
    if not result.get("pgvector"):
        out.append("pgvector side skipped (no --pgvector PATH)")
    return out


def side_table(rows, with_config):
    head = ("| configuration " if with_config else "") + \
        "| filter | rows passing | measured | plan run | recall@10 | rows returned | QPS | p50 ms | p99 ms " \
        "| p50 / unfiltered | mean / unfiltered | p99 / unfiltered |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(("| " + r["target"] + " " if with_config else "")
                     + f"| {r['case']} | {r['rows_passing']} | {measured_label(r)} | {'; '.join(r['executed_shapes'])} "
                     f"| {r['recall@10']:.3f} | {r['rows_mean']:.2f}"
                     + ("" if r["rows_mean"] >= K else f" (min {r['rows_min']})")
                     + f" | {r['qps']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {fmt(r['p50_ratio'], '.2f')} "
                     f"| {fmt(r['mean_ratio'], '.2f')} | {fmt(r['p99_ratio'], '.2f')} |")
    return lines + [""]


def markdown(result):
    args, data = result["args"], result["data"]
    title = (f"Filtered vector queries: {data['rows']} x {data['dim']} clustered vectors, "
             f"{CATEGORIES} categories")
    lines = ivfpq_bench.wrapped_report_head(title, result)
    env = result["environment"]
    pv = result.get("pgvector")
    if pv:
        p = env["pgvector"]
        lines += [f"- pgvector: checkout {p['path']} ({p.get('git')}, version {p.get('version')}), installed "
                  f"{p.get('installed_version')}, vector.so sha256 {p.get('installed_sha256')} "
                  f"(same as the checkout's build: {p.get('same_as_checkout_build')}); database {pv['database']}; "
                  "settings: " + ", ".join(f"{k} = {v}" for k, v in pv["settings"].items())]
    sizes = data["cluster_sizes"]
    lines += [f"- data: {data['rows']} x {data['dim']} float32, {args['clusters']} Gaussian clusters (random centres "
              f"N(0, 1) per coordinate, spread 0.5..1 per cluster, Zipf sizes: largest {max(sizes)}, median "
              f"{int(np.median(sizes))}, smallest {min(sizes)} rows), seed {args['seed']}; category uniform in "
              f"0..{CATEGORIES - 1}, independent of the vector; {result['nqueries']} query vectors from the same "
              f"distribution (a random stream of their own), {args['warmup']} more as warm-up",
              f"- queries: `{result['plans']['ivfpq'][CASES[1][0]]['sql']}` and the like, prepared, binary vector "
              f"parameter, one connection per side, one query at a time, {args['warmup']} untimed queries before each "
              f"measurement; {args['rounds']} round(s), each measuring every configuration and filter in turn; "
              "figures are medians over the rounds, ratios are per round (same target's unfiltered query), then "
              "the median",
              "- recall@10: against the exact answer of the same filtered query (float64 brute force over the rows "
              "passing the filter); a returned row is a hit when its exact distance is at most the 10th true "
              "distance. \"planner's plan\" is what the planner chose; when that is not a scan of the vector index "
              "the query is also measured \"forced\" (" + ", ".join(f"{n} = {v}" for n, v in FORCE) + "). \"plan "
              "run\" is the plan of the prepared statement (EXPLAIN EXECUTE after the measurement: the generic "
              "or custom plan, as the plan cache chose)",
              ""]
    lines += ["## Summary", ""] + [f"- {s}" for s in summary_lines(result)] + [""]

    t = result["tables"]["ivfpq"]
    lines += ["## ivfpq", "",
              f"Table `{TABLE}`: {mib(t['table_bytes'])}, load {t['load_s']:.1f} s. Indexes:", ""]
    lines += [f"- `{b['sql']}`: {b['build_s']:.1f} s, {mib(b['index_bytes'])} ({b['index']})" for b in t["indexes"]]
    if t.get("stats"):
        lines += ["", "ivfpq_index_stats: " + ", ".join(f"{k} = {v}" for k, v in t["stats"].items())]
    lines += ["", "Settings: " + (", ".join(f"{n} = {v}" for n, v in result["targets"]["ivfpq"]) or
                                 "none SET (ivfpq.probes, ivfpq.rerank: the server's defaults, listed above)"), ""]
    m = result["tables"].get(MULTI_NAME)
    if m:
        lines += [f"Table `{MULTI_TABLE}` (a copy of `{TABLE}`): {mib(m['table_bytes'])}, copy {m['load_s']:.1f} s. "
                  "Indexes:", ""]
        lines += [f"- `{b['sql']}`: {b['build_s']:.1f} s, {mib(b['index_bytes'])} ({b['index']})" for b in m["indexes"]]
        lines += ["", "ivfpq_index_stats: " + ", ".join(f"{k} = {v}" for k, v in m["stats"].items()), ""]
    lines += side_table([r for r in result["summary"] if r["side"] == "ivfpq"], bool(m))
    if pv:
        lines += ["## pgvector", ""]
        for name, t in result["tables"].items():
            if name in ("ivfpq", MULTI_NAME):
                continue
            load = "load" + (f" (as a copy of `{TABLE}`)" if name == IVFFLAT_TABLE else "")
            lines += [f"- table `{name}`: {mib(t['table_bytes'])}, {load} {t['load_s']:.1f} s; indexes: "
                      + "; ".join(f"`{b['sql']}` {b['build_s']:.1f} s, {mib(b['index_bytes'])}" for b in t["indexes"])]
        lines += [""] + [f"- {name}: " + ", ".join(f"{n} = {v}" for n, v in s)
                         for name, s in result["targets"].items() if name != "ivfpq"] + [""]
        lines += side_table([r for r in result["summary"] if r["side"] == "pgvector"], True)
    lines += ["## Plans", "", "EXPLAIN (COSTS OFF) of the first query vector, as the planner chose it (custom plan), "
              "the plan the prepared statement ran, and EXPLAIN (ANALYZE, TIMING OFF) of the same query.", ""]
    for target, cases in result["plans"].items():
        for case, p in cases.items():
            lines += [f"### {target}, {case}", "", f"`{p['sql']}`", "", "```", p["planner_plan"], "```", ""]
            if "forced_plan" in p:
                lines += ["Forced (" + ", ".join(f"{n} = {v}" for n, v in FORCE) + "):", "", "```",
                          p["forced_plan"], "```", ""]
            for variant, text in p.get("explain_analyze", {}).items():
                run = p.get("executed_plan", {}).get(variant)
                if run and pgclient.plan_shape(run) != pgclient.plan_shape(
                        p["forced_plan"] if variant == "forced" else p["planner_plan"]):
                    lines += [f"Prepared statement ({variant}) ran:", "", "```", run, "```", ""]
                lines += [f"EXPLAIN ANALYZE ({variant}):", "", "```", text, "```", ""]
    lines += ["## Every round", "",
              "| round | configuration | filter | measured | recall@10 | rows | QPS | p50 ms | p99 ms | plan run "
              "| generic / custom plans |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        lines.append(f"| {r['round']} | {r['target']} | {r['case']} | {r['variant']} | {r['recall@10']:.3f} | "
                     f"{r['rows_mean']:.2f} | {r['qps']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['executed_shape']} | {r['generic_plans']} / {r['custom_plans']} |")
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def setup_ivfpq(conn, args, table, load, columns):
    """`table`, made by load() (which returns its seconds), with the ivfpq index on `columns`
    (and the btree on category with --category-index); its figures."""
    load_s = load()
    options = ivfpq_bench.index_options(args.lists, args.m)
    indexes = [build_index(conn, table, "ivfpq", columns, options)]
    if args.category_index:
        indexes.append(build_index(conn, table, "btree", "category"))
    table_bytes = finish_table(conn, table, indexes)
    stats = ivfpq_bench.index_stats(conn, indexes[0]["index"])
    return {"load_s": load_s, "table_bytes": table_bytes, "indexes": indexes, "stats": stats}


def setup_pgvector(conn, args, vectors, categories):
    """pgvector's tables: items with the hnsw index, items_ivfflat (a copy) with the ivfflat one."""
    conn.execute("CREATE EXTENSION vector")
    pgclient.register_vector(conn)
    out = {}
    load_s = load_items(conn, vectors, categories, TABLE, "pgvector")
    if "hnsw" in args.pgvector_indexes:
        out[TABLE] = {"load_s": load_s, "indexes": []}
    if "ivfflat" in args.pgvector_indexes:
        # load + copy: the copy is written from items, in id order
        out[IVFFLAT_TABLE] = {"load_s": load_s + copy_table(conn, TABLE, IVFFLAT_TABLE), "indexes": []}
    for kind, table, with_clause in (("hnsw", TABLE, args.hnsw_options), ("ivfflat", IVFFLAT_TABLE,
                                                                           f"lists = {args.ivfflat_lists}")):
        if kind not in args.pgvector_indexes:
            continue
        out[table]["indexes"].append(build_index(conn, table, kind, "embedding vector_l2_ops", with_clause,
                                                 "pgvector"))
        if args.category_index:
            out[table]["indexes"].append(build_index(conn, table, "btree", "category", prefix="pgvector"))
        out[table]["table_bytes"] = finish_table(conn, table, out[table]["indexes"])
    if "hnsw" not in args.pgvector_indexes:
        conn.execute(f"DROP TABLE {TABLE}")
    return out


def main(argv=None):
    args = parse_args(argv)
    vectors, categories, queries, warmup, sizes = make_data(args)
    truth = Truth(vectors, categories, queries)
    passing = {name: int(mask.sum()) for name, mask in truth.passing.items()}
    log(f"data: {args.rows} x {args.dim} in {args.clusters} clusters (largest {sizes.max()}, smallest "
        f"{sizes.min()} rows); {len(queries)} queries + {len(warmup)} warm-up; rows passing: "
        + ", ".join(f"{k} {v}" for k, v in passing.items()))

    conn = psycopg.connect(args.dsn, autocommit=True)
    pconn = None
    try:
        pgclient.ensure_ivfpq(conn)
        environment = ivfpq_bench.machine_notes(conn)
        environment["wrapper"] = ivfpq_bench.wrapper_command("filtered_bench.py", "filtered.sh")
        result = {"data": {"name": "clustered", "rows": args.rows, "dim": args.dim,
                           "cluster_sizes": sizes.tolist(), "rows_passing": passing},
                  "args": vars(args), "nqueries": len(queries), "environment": environment,
                  "settings": ivfpq_bench.server_settings(conn), "notes": [], "tables": {}}
        result["tables"]["ivfpq"] = setup_ivfpq(conn, args, TABLE, lambda: load_items(conn, vectors, categories),
                                                "embedding")
        ivfpq_settings = ([("ivfpq.probes", args.probes)] if args.probes is not None else []) + \
            ([("ivfpq.rerank", args.rerank)] if args.rerank is not None else [])
        targets = [Target("ivfpq", "ivfpq", conn, TABLE, result["tables"]["ivfpq"]["indexes"][0]["index"],
                          ivfpq_settings)]
        if args.multicolumn:
            # items_multi, a copy of items, with the multicolumn index (embedding, category): the
            # scan checks the category condition on the index entries before re-ranking
            result["tables"][MULTI_NAME] = setup_ivfpq(conn, args, MULTI_TABLE,
                                                       lambda: copy_table(conn, TABLE, MULTI_TABLE),
                                                       "embedding, category")
            targets.append(Target("ivfpq", MULTI_NAME, conn, MULTI_TABLE,
                                  result["tables"][MULTI_NAME]["indexes"][0]["index"], ivfpq_settings))

        if args.pgvector:
            checkout = pgvector_checkout(args.pgvector)
            checkout.update(pgvector_installed(conn, checkout))
            environment["pgvector"] = checkout
            conn.execute(f"DROP DATABASE IF EXISTS {args.pgvector_db} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {args.pgvector_db}")
            pconn = psycopg.connect(conninfo.make_conninfo(args.dsn, dbname=args.pgvector_db), autocommit=True)
            tables = setup_pgvector(pconn, args, vectors, categories)
            result["tables"].update(tables)
            for kind, table in (("hnsw", TABLE), ("ivfflat", IVFFLAT_TABLE)):
                if kind not in args.pgvector_indexes:
                    continue
                index = next(i["index"] for i in tables[table]["indexes"] if i["am"] == kind)
                for mode in ("relaxed_order", "off"):
                    targets.append(Target("pgvector", f"pgvector {kind}, iterative_scan {mode}", pconn, table,
                                          index, [(f"{kind}.iterative_scan", mode)]))
            pv_settings = {r[0]: r[1] for r in pconn.execute(
                "SELECT name, setting FROM pg_settings WHERE name LIKE 'hnsw.%' OR name LIKE 'ivfflat.%' "
                "ORDER BY name")}
            result["pgvector"] = {"database": args.pgvector_db, "settings": pv_settings,
                                  "extversion": pconn.execute("SELECT extversion FROM pg_extension "
                                                              "WHERE extname = 'vector'").fetchone()[0]}
        else:
            log("pgvector side skipped (no --pgvector PATH given)")

        plans, variants = {}, {}
        for t in targets:
            plans[t.name], variants[t.name] = plans_for(t, queries[0])
            for case, p in plans[t.name].items():
                if not p["planner_uses_index"]:
                    result["notes"].append(
                        f"{t.name}, {case}: the planner chose {p['planner_shape']} rather than {t.index}; measured "
                        "both that plan and, forced with " + ", ".join(f"{n} = {v}" for n, v in FORCE) + ", "
                        + p["forced_shape"] + ("" if p["forced_uses_index"] else " (still not the vector index)"))
        result["plans"] = plans
        result["targets"] = {t.name: t.settings for t in targets}
        result["runs"] = run_rounds(targets, variants, queries, warmup, truth, args.rounds, plans)
        result["summary"] = summarize(result["runs"])
        for row in result["summary"]:
            row["rows_passing"] = passing[row["case"]]
            if row["rows_not_passing"]:
                result["notes"].append(f"{row['target']}, {row['case']}: {row['rows_not_passing']} returned rows do "
                                       "not pass the filter")
        ivfpq_bench.finish_environment(conn, environment, result["notes"])
    finally:
        if pconn is not None:
            pconn.close()
        if args.pgvector:
            conn.execute(f"DROP DATABASE IF EXISTS {args.pgvector_db} WITH (FORCE)")
        conn.close()

    path = args.results or ivfpq_bench.default_results_path("filtered")
    ivfpq_bench.write_results(result, path, markdown(result), summary_lines(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
