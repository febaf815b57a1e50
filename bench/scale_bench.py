#!/usr/bin/python3
"""Scale (issue 9, target 3): ivfpq on generated 768-dimensional embeddings at growing sizes
(default 1M, 3M and 10M rows; 10M is about 31 GB of heap, more than this machine's RAM).

Steps, on one cluster, in one run:
  1. rows: the generated set of bench/datasets.py (same model, same seeds, chunk by chunk, so the
     first N rows are exactly `generated:N`), streamed: each chunk is generated, folded into the
     exact top-10 of every query (float64, unit rows: d = 2 - 2 q.x), and COPYed (binary) into
     scale_items (id int, embedding vector(768)); nothing is cached on disk;
  2. at each size of --sizes: ANALYZE, CHECKPOINT, DROP and CREATE INDEX ... USING ivfpq (embedding)
     with the default lists and m (what a user gets), timed; meanwhile the anonymous memory
     (RssAnon) of all the server's processes is sampled every 0.2 s: peak and peak over the start;
     the index size;
  3. queries (--queries, one at a time, prepared, binary vector parameter): the (probes, rerank)
     settings of --probes x --rerank, each after --warmup untimed queries: recall@10, QPS,
     p50 / p99; the fastest setting with recall@10 >= --target is "chosen";
  4. cold and warm heap at the chosen setting: the server is restarted (shared buffers empty) and,
     with --drop-caches, the kernel's page cache dropped (sync; echo 3 > /proc/sys/vm/drop_caches:
     the whole machine's cache); the queries run once (cold), then once more (warm);
  5. cold heap, warm index (the issue's "cold heap"; skip with --no-cold-heap): for each setting of
     --cold-settings (default: the chosen one), the server restarted, the kernel's page cache
     dropped, the index (only) loaded with pg_prewarm and one untimed query run (the quantizer),
     then the queries once; and one more such pass that runs every query under
     EXPLAIN (ANALYZE, BUFFERS) with track_io_timing and counts the heap and index blocks each
     query read (pg_stat_get_xact_blocks_*): where the cold time goes;
  6. results printed and written to bench/results/scale-<date>.{md,json} (--results overrides).

    bash bench/scale.sh                                  # 1M, 3M, 10M (hours on this machine)
    bash bench/scale.sh --sizes 200000,500000 --queries 50   # smoke run

Connection: the libpq environment of the cluster bench/scale.sh starts (PGHOST is its socket
directory, whose data/ holds the cluster, which the script restarts for the cold runs).
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import psycopg

import datasets
import ivfpq_bench
import pgclient
from ivfpq_bench import K, fmt, log, mib

TABLE = "scale_items"
INDEX = "scale_items_ivfpq"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", nargs="?", default="generated", choices=["generated"],
                    help="the generated set of bench/datasets.py (the only one; default)")
    ap.add_argument("--sizes", default="1000000,3000000,10000000", help="row counts (default %(default)s)")
    ap.add_argument("--queries", type=int, default=200, help="query vectors (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed queries before each setting")
    ap.add_argument("--probes", default="16,32,64,128", help="ivfpq.probes values (default %(default)s)")
    ap.add_argument("--rerank", default="100,200", help="ivfpq.rerank values (default %(default)s)")
    ap.add_argument("--target", type=float, default=0.95, help="recall@10 target (default %(default)s)")
    ap.add_argument("--drop-caches", action="store_true",
                    help="drop the kernel's page cache before the cold runs (the whole machine's)")
    ap.add_argument("--no-cold-heap", dest="cold_heap", action="store_false",
                    help="skip the cold-heap passes (they drop the whole machine's page cache)")
    ap.add_argument("--cold-settings", default="",
                    help="probes/rerank pairs for the cold-heap passes, e.g. 64/150,64/200 (default: the chosen)")
    ap.add_argument("--keep-table", action="store_true",
                    help="keep the table and index at the end (the cluster's data directory stays until the "
                         "next bench/scale.sh run; start it with pg_ctl to look further)")
    ap.add_argument("--results", help="output path; default bench/results/scale-<date>")
    args = ap.parse_args(argv)
    args.cold_settings = [tuple(int(x) for x in pair.split("/")) for pair in args.cold_settings.split(",") if pair]
    args.sizes = ivfpq_bench.int_list(args.sizes)
    args.probes = ivfpq_bench.int_list(args.probes)
    args.rerank = ivfpq_bench.int_list(args.rerank)
    if args.sizes != sorted(args.sizes) or min(args.sizes) < 1000:
        ap.error("--sizes must grow and be at least 1000")
    return args


class Truth:
    """The exact 10 nearest rows of every query, over the rows streamed so far."""

    def __init__(self, queries):
        self.q = np.asarray(queries, dtype=np.float64)
        self.dist = np.full((len(queries), K), np.inf)
        self.ids = np.full((len(queries), K), -1, dtype=np.int64)

    def add(self, first_id, rows):
        d = 2.0 - 2.0 * (self.q @ np.asarray(rows, dtype=np.float64).T)
        dist = np.concatenate([self.dist, d], axis=1)
        ids = np.concatenate([self.ids, np.broadcast_to(np.arange(first_id, first_id + len(rows)), d.shape)],
                             axis=1)
        top = np.argpartition(dist, K - 1, axis=1)[:, :K]
        self.dist = np.take_along_axis(dist, top, axis=1)
        self.ids = np.take_along_axis(ids, top, axis=1)

    def recall(self, found):
        """recall@10: the share of the true 10 nearest among the rows returned (continuous data:
        no ties to speak of)."""
        hits = sum(len(set(got[:K]) & set(self.ids[q].tolist())) for q, got in enumerate(found))
        return hits / (K * len(found))


class MemorySampler:
    """Peak total RssAnon of the postmaster's children while running (sampled every 0.2 s)."""

    def __init__(self, postmaster_pid):
        self.pid = postmaster_pid
        self.peak = 0
        self.start = self.total()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def total(self):
        kb = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                if ppid != self.pid and int(entry) != self.pid:
                    continue
                with open(f"/proc/{entry}/status") as f:
                    for line in f:
                        if line.startswith("RssAnon:"):
                            kb += int(line.split()[1])
            except (OSError, ValueError, IndexError):
                continue
        return kb * 1024

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.total())
            time.sleep(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def data_dir():
    return os.path.join(os.environ["PGHOST"], "data")


def postmaster_pid():
    with open(os.path.join(data_dir(), "postmaster.pid")) as f:
        return int(f.readline())


def pg_ctl(*args):
    """Run pg_ctl on the cluster of PGHOST (as postgres when root), its log in server.log beside data/."""
    cmd = [os.path.join(os.environ.get("IVFPQ_PGBIN", "/usr/lib/postgresql/15/bin"), "pg_ctl"), "-D", data_dir(),
           "-l", os.path.join(os.environ["PGHOST"], "server.log"), *args]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def drop_page_cache():
    """Drop the kernel's page cache (the whole machine's; root only)."""
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def restart_server(drop_caches):
    """Restart the cluster (empty shared buffers); optionally drop the kernel's page cache."""
    pg_ctl("-m", "fast", "-w", "restart")
    if drop_caches:
        drop_page_cache()


def connect():
    conn = psycopg.connect(autocommit=True)
    pgclient.ensure_ivfpq(conn)
    return conn


def run(conn, queries, truth, probes, rerank, warmup, keep_latencies=False):
    conn.execute(f"SET ivfpq.probes = {probes}")
    conn.execute(f"SET ivfpq.rerank = {rerank}")
    conn.execute("SET enable_seqscan = off")
    ids, lat = pgclient.run_queries(conn, queries, "l2", K, TABLE, warmup=warmup)
    row = {"probes": probes, "rerank": rerank, **pgclient.latency_summary(lat), "recall@10": truth.recall(ids)}
    if keep_latencies:
        row["latencies_ms"] = [round(float(x) * 1000, 3) for x in lat]
        row["first_ms"] = row["latencies_ms"][0]
        row["p99_without_first_ms"] = float(np.percentile(np.asarray(lat[1:]) * 1000, 99))
    log(f"pg: probes {probes:4d} rerank {rerank:4d}  recall@10 {row['recall@10']:.3f}  QPS {row['qps']:8.1f}  "
        f"p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms")
    return row


def measure_size(conn, args, n, queries, warmup, truth):
    out = {"rows": n}
    conn.execute(f"ANALYZE {TABLE}")
    conn.execute(f"DROP INDEX IF EXISTS {INDEX}")
    conn.execute("CHECKPOINT")
    sql = f"CREATE INDEX {INDEX} ON {TABLE} USING ivfpq (embedding)"
    log(f"pg: {n} rows: {sql}")
    with MemorySampler(postmaster_pid()) as mem:
        out["build_s"], out["notices"] = ivfpq_bench.timed_with_notices(conn, sql, "pg", INDEX)
    out["memory_start_bytes"], out["memory_peak_bytes"] = mem.start, mem.peak
    out["index_bytes"] = conn.execute(f"SELECT pg_relation_size('{INDEX}')").fetchone()[0]
    out["table_bytes"] = conn.execute(f"SELECT pg_table_size('{TABLE}')").fetchone()[0]
    out["stats"] = ivfpq_bench.index_stats(conn, INDEX)
    log(f"pg: built in {out['build_s']:.1f} s, server RssAnon peak {mib(mem.peak)} (at start {mib(mem.start)}), "
        f"index {mib(out['index_bytes'])}, table {mib(out['table_bytes'])}")
    out["sweep"] = [run(conn, queries, truth, p, r, warmup) for p in args.probes for r in args.rerank]
    ok = [r for r in out["sweep"] if r["recall@10"] >= args.target]
    out["chosen"] = max(ok, key=lambda r: r["qps"]) if ok else max(out["sweep"], key=lambda r: r["recall@10"])
    out["target_met"] = bool(ok)
    conn.close()
    restart_server(args.drop_caches)
    conn = connect()
    c = out["chosen"]
    log(f"pg: cold run at probes {c['probes']} rerank {c['rerank']}"
        + (" (page cache dropped)" if args.drop_caches else " (server restarted, page cache kept)"))
    out["cold"] = run(conn, queries, truth, c["probes"], c["rerank"], (), keep_latencies=True)
    out["warm"] = run(conn, queries, truth, c["probes"], c["rerank"], (), keep_latencies=True)
    if args.cold_heap:
        out["cold_heap"] = []
        for probes, rerank in args.cold_settings or [(c["probes"], c["rerank"])]:
            conn = cold_heap_connection(conn, warmup, probes, rerank, out)
            out["cold_heap"].append(run(conn, queries, truth, probes, rerank, (), keep_latencies=True))
        conn = cold_heap_connection(conn, warmup, c["probes"], c["rerank"], out)
        out["cold_heap_explain"] = explain_pass(conn, queries, c["probes"], c["rerank"])
    return out, conn


def cold_heap_connection(conn, warmup, probes, rerank, out):
    """Restart the server and drop the page cache (the heap is cold), then load the index alone
    with pg_prewarm and run one untimed query (the quantizer): a server that keeps its index in
    memory and reads the heap from disk."""
    conn.close()
    restart_server(True)
    conn = connect()
    t0 = time.perf_counter()
    out["prewarm_blocks"] = pgclient.prewarm(conn, INDEX)
    out["prewarm_s"] = time.perf_counter() - t0
    if out["prewarm_blocks"] is None:
        log("pg: pg_prewarm is not available: the index is cold too")
    pgclient.run_queries(conn, [], "l2", K, TABLE, warmup=warmup[:1])
    log(f"pg: cold heap (page cache dropped, index prewarmed in {out['prewarm_s']:.1f} s) "
        f"at probes {probes} rerank {rerank}")
    return conn


def explain_pass(conn, queries, probes, rerank):
    """Every query once under EXPLAIN (ANALYZE, BUFFERS) with track_io_timing, in its own
    transaction, with the heap and index blocks it read from outside shared buffers."""
    conn.execute(f"SET ivfpq.probes = {probes}")
    conn.execute(f"SET ivfpq.rerank = {rerank}")
    conn.execute("SET enable_seqscan = off")
    conn.execute("SET track_io_timing = on")
    sql = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + pgclient.knn_sql("l2", K, TABLE)
    reads = ("SELECT pg_stat_get_xact_blocks_fetched(%s::regclass) - pg_stat_get_xact_blocks_hit(%s::regclass), "
             "pg_stat_get_xact_blocks_fetched(%s::regclass) - pg_stat_get_xact_blocks_hit(%s::regclass)")
    rows = []
    with conn.cursor(binary=True) as cur:
        for q in queries:
            # The counters hold this backend's counts not yet flushed to the
            # statistics (several transactions' worth): take the difference.
            with conn.transaction():
                cur.execute(reads, (TABLE, TABLE, INDEX, INDEX))
                heap_before, index_before = cur.fetchone()
                cur.execute(sql, (pgclient.Vector(q),))
                doc = cur.fetchone()[0]
                doc = (doc if isinstance(doc, list) else json.loads(doc))[0]
                cur.execute(reads, (TABLE, TABLE, INDEX, INDEX))
                heap_after, index_after = cur.fetchone()
            heap_reads, index_reads = heap_after - heap_before, index_after - index_before
            plan = doc["Plan"]
            rows.append({"exec_ms": doc["Execution Time"], "io_read_ms": plan.get("I/O Read Time", 0.0),
                         "shared_hit": plan.get("Shared Hit Blocks", 0), "shared_read": plan.get("Shared Read Blocks", 0),
                         "heap_reads": int(heap_reads), "index_reads": int(index_reads)})
    ex = np.array([r["exec_ms"] for r in rows])
    io = np.array([r["io_read_ms"] for r in rows])
    summary = {"probes": probes, "rerank": rerank, "p50_exec_ms": float(np.percentile(ex, 50)),
               "p99_exec_ms": float(np.percentile(ex, 99)), "mean_exec_ms": float(ex.mean()),
               "mean_io_read_ms": float(io.mean()), "p99_io_read_ms": float(np.percentile(io, 99)),
               "mean_heap_reads": float(np.mean([r["heap_reads"] for r in rows])),
               "mean_index_reads": float(np.mean([r["index_reads"] for r in rows])),
               "slowest": sorted(rows, key=lambda r: -r["exec_ms"])[:5], "queries": rows}
    log(f"pg: cold heap EXPLAIN: exec p50 {summary['p50_exec_ms']:.2f} p99 {summary['p99_exec_ms']:.2f} ms, "
        f"I/O read mean {summary['mean_io_read_ms']:.2f} ms, heap reads {summary['mean_heap_reads']:.1f}, "
        f"index reads {summary['mean_index_reads']:.1f} per query")
    return summary


def markdown(result):
    args = result["args"]
    lines = ivfpq_bench.wrapped_report_head(f"Scale: generated 768-dimensional rows at {args['sizes']}", result)
    lines += [f"- queries: {result['nqueries']} generated query vectors, one at a time (prepared, binary "
              f"parameter), {args['warmup']} untimed before each setting of the sweep; recall@10 against the "
              "exact top 10 (float64) of the rows loaded so far; target recall@10 >= " + str(args["target"]),
              f"- cold: the server restarted (shared buffers empty)"
              + (" and the kernel's page cache dropped" if args["drop_caches"] else ", the kernel's page cache kept")
              + "; warm: the same queries right after", "", "## Growth", "",
              "| rows | table | index | index / table | build s | server RssAnon peak (start) | chosen probes / rerank "
              "| recall@10 | warm QPS | warm p50 / p99 ms | cold p50 / p99 ms |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in result["sizes"]:
        c, w, cold = s["chosen"], s["warm"], s["cold"]
        lines.append(f"| {s['rows']} | {mib(s['table_bytes'])} | {mib(s['index_bytes'])} | "
                     f"{s['index_bytes'] / s['table_bytes']:.3f} | {s['build_s']:.1f} | {mib(s['memory_peak_bytes'])} "
                     f"({mib(s['memory_start_bytes'])}) | {c['probes']} / {c['rerank']}"
                     + ("" if s["target_met"] else " (target not reached)")
                     + f" | {w['recall@10']:.3f} | {w['qps']:.1f} | {w['p50_ms']:.2f} / {w['p99_ms']:.2f} | "
                     f"{cold['p50_ms']:.2f} / {cold['p99_ms']:.2f} |")
    for s in result["sizes"]:
        lines += ["", f"## {s['rows']} rows: sweep (warm)", "", "| probes | rerank | recall@10 | QPS | p50 ms | p99 ms |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['probes']} | {r['rerank']} | {r['recall@10']:.3f} | {r['qps']:.1f} | {r['p50_ms']:.2f} | "
                  f"{r['p99_ms']:.2f} |" for r in s["sweep"]]
        if s.get("stats"):
            lines += ["", "ivfpq_index_stats: " + ", ".join(f"{k} = {v}" for k, v in s["stats"].items())]
        if s.get("cold_heap"):
            lines += ["", f"## {s['rows']} rows: cold heap, warm index", "",
                      f"Each pass: server restarted, the kernel's page cache dropped, the index loaded with "
                      f"pg_prewarm ({s['prewarm_blocks']} blocks, {s['prewarm_s']:.1f} s), one untimed query.", "",
                      "| probes | rerank | recall@10 | QPS | p50 ms | p99 ms | first query ms | p99 without the first ms |",
                      "|---|---|---|---|---|---|---|---|"]
            lines += [f"| {r['probes']} | {r['rerank']} | {r['recall@10']:.3f} | {r['qps']:.1f} | {r['p50_ms']:.2f} | "
                      f"{r['p99_ms']:.2f} | {r['first_ms']:.2f} | {r['p99_without_first_ms']:.2f} |"
                      for r in s["cold_heap"]]
            e = s["cold_heap_explain"]
            lines += ["", f"Where the cold time goes (EXPLAIN ANALYZE BUFFERS, track_io_timing, probes {e['probes']} "
                      f"rerank {e['rerank']}, another cold pass): execution p50 {e['p50_exec_ms']:.2f} / p99 "
                      f"{e['p99_exec_ms']:.2f} ms; I/O read time mean {e['mean_io_read_ms']:.2f} / p99 "
                      f"{e['p99_io_read_ms']:.2f} ms; blocks read from outside shared buffers per query: heap "
                      f"{e['mean_heap_reads']:.1f}, index {e['mean_index_reads']:.1f}. Slowest queries:", "",
                      "| execution ms | I/O read ms | heap blocks read | index blocks read | shared hit |",
                      "|---|---|---|---|---|"]
            lines += [f"| {r['exec_ms']:.2f} | {r['io_read_ms']:.2f} | {r['heap_reads']} | {r['index_reads']} | "
                      f"{r['shared_hit']} |" for r in e["slowest"]]
        for name in ("cold", "warm"):
            r = s[name]
            if "first_ms" in r:
                lines += ["", f"{name.capitalize()} server pass: first query {r['first_ms']:.2f} ms, p99 without it "
                          f"{r['p99_without_first_ms']:.2f} ms."]
        lines += ["", f"Load up to this size: {s['load_s']:.1f} s."]
    lines.append("")
    return "\n".join(lines)


def summary_lines(result):
    out = []
    for s in result["sizes"]:
        c, w, cold = s["chosen"], s["warm"], s["cold"]
        out.append(f"{s['rows']} rows: build {s['build_s']:.1f} s, server RssAnon peak {mib(s['memory_peak_bytes'])}, "
                   f"index {mib(s['index_bytes'])} ({s['index_bytes'] / s['table_bytes']:.3f} of the table); "
                   f"probes {c['probes']} rerank {c['rerank']}: recall@10 {w['recall@10']:.3f}"
                   + ("" if s["target_met"] else f" (below {result['args']['target']})")
                   + f", warm {w['qps']:.1f} QPS p50 {w['p50_ms']:.2f} p99 {w['p99_ms']:.2f} ms, "
                   f"cold p50 {cold['p50_ms']:.2f} p99 {cold['p99_ms']:.2f} ms")
        for r in s.get("cold_heap", []):
            out.append(f"  cold heap, warm index: probes {r['probes']} rerank {r['rerank']}: recall@10 "
                       f"{r['recall@10']:.3f}, p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms")
    return out


def main(argv=None):
    args = parse_args(argv)
    params = datasets.GeneratedParams()
    model = datasets.GeneratedModel(params)
    all_queries = model.sample(datasets.GEN_CHUNK, np.random.default_rng([params.seed, 2, 0]))
    queries, warmup = all_queries[:args.queries], all_queries[args.queries:args.queries + args.warmup]
    truth = Truth(queries)

    conn = connect()
    environment = ivfpq_bench.machine_notes(conn)
    environment["wrapper"] = ivfpq_bench.wrapper_command("scale_bench.py", "scale.sh")
    result = {"args": vars(args), "nqueries": len(queries), "environment": environment,
              "settings": ivfpq_bench.server_settings(conn), "notes": [], "sizes": []}
    conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    conn.execute(f"CREATE TABLE {TABLE} (id int NOT NULL, embedding vector({params.dim}))")
    loaded, chunk_no, load_s = 0, 0, 0.0
    pending = np.empty((0, params.dim), dtype=np.float32)  # rest of a chunk cut at a size
    for n in args.sizes:
        t0 = time.perf_counter()
        while loaded < n:
            if len(pending) == 0:
                pending = model.sample(datasets.GEN_CHUNK, np.random.default_rng([params.seed, 1, chunk_no]))
                chunk_no += 1
            rows, pending = pending[:n - loaded], pending[n - loaded:]
            truth.add(loaded, rows)
            pgclient.copy_into(conn, TABLE, np.arange(loaded, loaded + len(rows)), rows, log=None)
            loaded += len(rows)
            if chunk_no % 20 == 0 and len(pending) == 0:
                log(f"pg: loaded {loaded}/{n} rows")
        load_s += time.perf_counter() - t0
        size, conn = measure_size(conn, args, n, queries, warmup, truth)
        size["load_s"] = load_s
        result["sizes"].append(size)
    ivfpq_bench.finish_environment(conn, environment, result["notes"])
    if not args.keep_table:
        conn.execute(f"DROP TABLE {TABLE}")
    conn.close()
    path = args.results or ivfpq_bench.default_results_path("scale")
    ivfpq_bench.write_results(result, path, markdown(result), summary_lines(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
