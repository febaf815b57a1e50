#!/usr/bin/python3
"""Read scaling with streaming replicas (issue 10): k-NN QPS and p50 / p99
latency at recall@10 >= 0.95 with the same clients spread over 1, 2 and 3
servers (a primary and two hot standbys) while the primary takes writes;
replica lag; equal answers after catch-up.

Two phases, normally started by bench/replicas.sh, which starts the primary,
runs --phase load, makes the two standbys (pg_basebackup -R over loopback TCP)
and runs --phase measure:

  load     1. items (id bigint PRIMARY KEY, embedding vector(d)) with the
              dataset's first --rows rows (binary COPY) and the queries in
              bench_queries (qid, embedding); CREATE INDEX ... USING ivfpq
              WITH (lists = ~sqrt(rows)); the build figures go to --state;
  measure  2. wait until both standbys have replayed everything; pg_prewarm
              the table on every server;
           3. the setting: the smallest probes of --probes whose recall@10 on
              the primary is >= 0.95 (rerank fixed), queries one at a time;
              each standby's recall at that setting;
           4. the write load on the primary, in a thread, for the rest of the
              measurement: every --tick seconds a binary COPY of --insert-rows
              new rows (vectors from the same generator, past the loaded
              ones), a DELETE of the oldest inserted batch once --window rows
              are in, a VACUUM every --vacuum-every seconds; a second thread
              samples pg_stat_replication (replay_lag, and pg_wal_lsn_diff of
              the primary's current LSN and each standby's replay LSN, in
              bytes) every 0.5 s;
           5. --rounds rounds; in each, pgbench for --seconds with --clients
              clients in all on 1 server (the primary), 2 (primary + standby1)
              and 3 (primary + both standbys), the clients split evenly, one
              pgbench per server running at once, each transaction a random
              query of bench_queries; the order of the three layouts rotates
              from round to round; per-transaction latencies from pgbench's
              log (-l); QPS is the sum over the servers; figures are medians
              over the rounds, latency percentiles over all transactions;
           6. the write load stops; time until both standbys have replayed the
              primary's last LSN; then every query of the set, one at a time,
              on each server: the standbys' ids must equal the primary's;
              recall against exact search over the rows now in the table;
           7. results in bench/results/replicas-<dataset>-<date>.{md,json}.

Only the original rows' ids are below --rows; the write load inserts ids from
--rows upwards and deletes only rows it inserted, so the loaded rows stay.
"""

import argparse
import collections
import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time

import numpy as np
import psycopg

import datasets
import ivfpq_bench
import pgclient
from ivfpq_bench import K, fmt, int_list, log
from shards_bench import build_index, conninfo_params, copy_rows8, load

TARGET = 0.95
POOL = 200_000  # rows past --rows the write load may insert (then it starts over with new ids)
SCRIPT = """\\set q random(0, {last})
SELECT id FROM items ORDER BY embedding <-> (SELECT embedding FROM bench_queries WHERE qid = :q) LIMIT 10;
"""


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", nargs="?", default="generated", choices=("generated", "siftlike"),
                    help="generated (768 dims, default) | siftlike (128 dims)")
    ap.add_argument("--phase", choices=("load", "measure"), required=True)
    ap.add_argument("--rows", type=int, default=200_000, help="rows loaded (default %(default)s)")
    ap.add_argument("--primary", required=True, help="libpq conninfo of the primary")
    ap.add_argument("--standby", action="append", default=[], help="libpq conninfo of a standby (twice)")
    ap.add_argument("--state", required=True, help="JSON file the load phase leaves for the measure phase")
    ap.add_argument("--m", type=int, help="PQ subquantizers (default: the index's)")
    ap.add_argument("--probes", type=int_list, default=[16, 24, 32, 48, 64, 96, 128],
                    help="probes tried for recall@10 >= 0.95 (default %(default)s)")
    ap.add_argument("--rerank", type=int, default=100, help="ivfpq.rerank (default %(default)s)")
    ap.add_argument("--nqueries", type=int, default=200, help="queries in the set (default %(default)s)")
    ap.add_argument("--clients", type=int, default=6, help="pgbench clients in all (default %(default)s)")
    ap.add_argument("--seconds", type=int, default=20, help="seconds per pgbench run (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the three layouts (default %(default)s)")
    ap.add_argument("--insert-rows", type=int, default=100, help="rows per insert batch (default %(default)s)")
    ap.add_argument("--tick", type=float, default=1.0, help="seconds between insert batches (default %(default)s)")
    ap.add_argument("--window", type=int, default=2000,
                    help="inserted rows kept before the oldest batch is deleted (default %(default)s)")
    ap.add_argument("--vacuum-every", type=float, default=15.0, help="seconds between VACUUMs (default %(default)s)")
    ap.add_argument("--results", help="output path without extension (default bench/results/replicas-<dataset>-<date>)")
    return ap.parse_args(argv)


def dataset(args):
    """(the loaded rows and the query set, the pool of rows the write load inserts)."""
    ds = datasets.load(f"{args.dataset}:{args.rows}")
    ds = datasets.Dataset(ds.name, ds.base, ds.queries[:args.nqueries], ds.cache_dir)
    pool = datasets.load(f"{args.dataset}:{args.rows + POOL}").base[args.rows:]
    return ds, pool


def connect(dsn):
    conn = psycopg.connect(dsn, autocommit=True)
    if conn.execute("SELECT to_regtype('vector') IS NOT NULL").fetchone()[0]:
        pgclient.register_vector(conn)
    return conn


def copy_in(conn, table, ids, vectors):
    """Binary COPY of (id, vector) rows into table."""
    with conn.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN (FORMAT binary)") as copy:
        copy.write(pgclient.COPY_SIGNATURE)
        copy.write(copy_rows8(np.asarray(ids, dtype=np.int64), np.asarray(vectors, dtype=np.float32)))
        copy.write(pgclient.COPY_TRAILER)


def phase_load(args):
    ds, _ = dataset(args)
    n, dim = ds.base.shape
    conn = psycopg.connect(args.primary, autocommit=True)
    conn.execute("CREATE EXTENSION IF NOT EXISTS ivfpq")
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
    log(f"loading {n} x {dim} rows into items on the primary")
    build = {"rows": n, "lists": max(1, round(n ** 0.5))}
    build["load_s"] = load(conn, "items", np.arange(n, dtype=np.int64), ds.base)
    build.update(build_index(conn, "items", build["lists"], args.m))
    conn.execute("DROP TABLE IF EXISTS bench_queries")
    conn.execute(f"CREATE TABLE bench_queries (qid bigint PRIMARY KEY, embedding vector({dim}))")
    copy_in(conn, "bench_queries", np.arange(len(ds.queries)), ds.queries)
    conn.execute("ANALYZE bench_queries")
    conn.execute("CHECKPOINT")   # the base backups start from here
    with open(args.state, "w") as f:
        json.dump({"build": build}, f)
    conn.close()


def replay_gap(primary):
    """{standby name: bytes not yet replayed} from pg_stat_replication."""
    return dict(primary.execute(
        "SELECT application_name, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint "
        "FROM pg_stat_replication").fetchall())


def wait_caught_up(primary, names, timeout=600):
    """Seconds until every standby in names has replayed the primary's current LSN."""
    t0 = time.perf_counter()
    target = primary.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    while time.perf_counter() - t0 < timeout:
        rows = dict(primary.execute(
            "SELECT application_name, replay_lsn >= %s::pg_lsn FROM pg_stat_replication", (str(target),)).fetchall())
        if all(rows.get(name) for name in names):
            return time.perf_counter() - t0
        time.sleep(0.05)
    raise RuntimeError(f"standbys {names} did not catch up within {timeout} s: {replay_gap(primary)}")


def run_set(conn, queries, probes, rerank):
    """Every query once, one at a time: (ids per query, latencies in s)."""
    conn.execute(f"SET ivfpq.probes = {probes}")
    conn.execute(f"SET ivfpq.rerank = {rerank}")
    sql = f"SELECT id FROM items ORDER BY embedding <-> %b LIMIT {K}"
    ids, lat = [], np.empty(len(queries))
    with conn.cursor(binary=True) as cur:
        for i, q in enumerate(queries):
            t0 = time.perf_counter()
            cur.execute(sql, (pgclient.Vector(q),), prepare=True)
            ids.append([r[0] for r in cur.fetchall()])
            lat[i] = time.perf_counter() - t0
    return ids, lat


class WriteLoad(threading.Thread):
    """Inserts, deletes and VACUUMs on the primary until stop() (step 4)."""

    def __init__(self, dsn, pool, first_id, args):
        super().__init__(daemon=True)
        self.dsn, self.pool, self.next_id, self.args = dsn, pool, first_id, args
        self.first_id = first_id
        self.batches = collections.deque()   # (ids, pool positions) of the rows in the table
        self.stopping = threading.Event()
        self.stats = {"inserted": 0, "deleted": 0, "vacuums": 0, "vacuum_s": [], "insert_s": [], "late_ticks": 0,
                      "errors": []}
        self.pool_at = 0

    def run(self):
        try:
            conn = psycopg.connect(self.dsn, autocommit=True)
            a = self.args
            next_vacuum = time.perf_counter() + a.vacuum_every
            next_tick = time.perf_counter()
            while not self.stopping.is_set():
                take = np.arange(self.pool_at, self.pool_at + a.insert_rows) % len(self.pool)
                self.pool_at += a.insert_rows
                ids = np.arange(self.next_id, self.next_id + a.insert_rows, dtype=np.int64)
                self.next_id += a.insert_rows
                t0 = time.perf_counter()
                copy_in(conn, "items", ids, self.pool[take])
                self.stats["insert_s"].append(time.perf_counter() - t0)
                self.batches.append((ids, take))
                self.stats["inserted"] += len(ids)
                while sum(len(b[0]) for b in self.batches) > a.window:
                    old, _ = self.batches.popleft()
                    conn.execute("DELETE FROM items WHERE id = ANY(%s)", (old.tolist(),))
                    self.stats["deleted"] += len(old)
                if time.perf_counter() >= next_vacuum:
                    t0 = time.perf_counter()
                    conn.execute("VACUUM items")
                    self.stats["vacuum_s"].append(time.perf_counter() - t0)
                    self.stats["vacuums"] += 1
                    next_vacuum = time.perf_counter() + a.vacuum_every
                next_tick += a.tick
                delay = next_tick - time.perf_counter()
                if delay > 0:
                    self.stopping.wait(delay)
                else:
                    self.stats["late_ticks"] += 1
                    next_tick = time.perf_counter()
            conn.close()
        except Exception as e:  # reported in the results, and fails the run
            self.stats["errors"].append(repr(e))

    def stop(self):
        self.stopping.set()
        self.join()

    def live_rows(self):
        """(ids, pool positions) of the inserted rows still in the table."""
        if not self.batches:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        return (np.concatenate([b[0] for b in self.batches]), np.concatenate([b[1] for b in self.batches]))


class LagSampler(threading.Thread):
    """pg_stat_replication every `every` seconds: replay_lag (s) and replay gap (bytes) per standby."""

    def __init__(self, dsn, every=0.5):
        super().__init__(daemon=True)
        self.dsn, self.every = dsn, every
        self.samples = collections.defaultdict(list)   # name -> [(t, lag_s or None, bytes)]
        self.stopping = threading.Event()

    def run(self):
        conn = psycopg.connect(self.dsn, autocommit=True)
        t0 = time.perf_counter()
        while not self.stopping.is_set():
            for name, lag, gap in conn.execute(
                    "SELECT application_name, extract(epoch FROM replay_lag)::float8, "
                    "pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint FROM pg_stat_replication"):
                self.samples[name].append((time.perf_counter() - t0, lag, gap))
            self.stopping.wait(self.every)
        conn.close()

    def stop(self):
        self.stopping.set()
        self.join()

    def summary(self):
        out = {}
        for name, s in sorted(self.samples.items()):
            lags = [x[1] if x[1] is not None else 0.0 for x in s]   # NULL: nothing to replay lately
            gaps = [x[2] for x in s if x[2] is not None]
            out[name] = {"samples": len(s),
                         "replay_lag_ms": {"median": 1000 * statistics.median(lags), "p95": 1000 * float(np.percentile(lags, 95)),
                                           "max": 1000 * max(lags)},
                         "gap_bytes": {"median": statistics.median(gaps), "p95": float(np.percentile(gaps, 95)),
                                       "max": max(gaps)}}
        return out


def pgbench_bin():
    pgbin = os.environ.get("IVFPQ_PGBIN")
    return os.path.join(pgbin, "pgbench") if pgbin else "pgbench"


def pgbench_layout(dsns, clients, seconds, script, options, workdir):
    """One pgbench per server at once, clients split evenly; per-server TPS, all latencies (s), errors."""
    procs = []
    per = [clients // len(dsns) + (1 if i < clients % len(dsns) else 0) for i in range(len(dsns))]
    env = dict(os.environ, PGOPTIONS=" ".join(f"-c {k}={v}" for k, v in options.items()))
    for i, (dsn, c) in enumerate(zip(dsns, per)):
        p = conninfo_params(dsn)
        prefix = os.path.join(workdir, f"server{i}")
        for f in glob.glob(prefix + ".*"):
            os.remove(f)
        cmd = [pgbench_bin(), "-n", "-M", "prepared", "-T", str(seconds), "-c", str(c), "-j", str(c),
               "-h", p["host"], "-p", p["port"], "-U", p.get("user", "postgres"), "-f", script,
               "-l", f"--log-prefix={prefix}", p.get("dbname", "postgres")]
        procs.append((subprocess.Popen(cmd, env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True), prefix))
    tps, latencies, errors = [], [], []
    for proc, prefix in procs:
        out, err = proc.communicate()
        m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
        tps.append(float(m.group(1)) if m else 0.0)
        if proc.returncode != 0 or not m:
            errors.append(f"pgbench exit {proc.returncode}: {err.strip()[-400:]}")
        errors += [line for line in err.splitlines() if "ERROR" in line or "aborted" in line][:5]
        for path in glob.glob(prefix + ".*"):
            with open(path) as f:
                for line in f:
                    fields = line.split()
                    if len(fields) >= 3 and fields[2].isdigit():
                        latencies.append(int(fields[2]) / 1e6)
    return tps, np.asarray(latencies), errors


def exact_top(vectors, ids, queries, k=K):
    """Exact L2 top-k ids of queries among (ids, vectors)."""
    import faiss
    index = faiss.IndexFlatL2(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    _, pos = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return ids[pos]


def phase_measure(args):
    t_start = time.perf_counter()
    if len(args.standby) != 2:
        raise SystemExit("give --standby twice")
    with open(args.state) as f:
        state = json.load(f)
    ds, pool = dataset(args)
    n, dim = ds.base.shape
    queries = ds.queries
    truth = ds.ground_truth("l2")[:len(queries)]
    dsns = [args.primary] + args.standby
    names = ["primary", "standby1", "standby2"]
    conns = [connect(d) for d in dsns]
    primary = conns[0]
    environment = ivfpq_bench.machine_notes(primary)
    environment["wrapper"] = os.environ.get("IVFPQ_BENCH_WRAPPER")
    environment["shared_buffers"] = primary.execute("SHOW shared_buffers").fetchone()[0]
    settings = ivfpq_bench.server_settings(primary)

    log("waiting for the standbys to replay the load")
    initial_catchup_s = wait_caught_up(primary, names[1:])
    for name, c in zip(names, conns):
        assert (c.execute("SELECT pg_is_in_recovery()").fetchone()[0]) == (name != "primary"), name
        pgclient.prewarm(c, "items")
    plans = {}
    for name, c in zip(names, conns):
        plans[name] = "\n".join(r[0] for r in c.execute(
            "EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY embedding <-> "
            "(SELECT embedding FROM bench_queries WHERE qid = 0) LIMIT 10"))
        if "items_embedding_idx" not in plans[name]:
            raise RuntimeError(f"{name}: the benchmark query does not use the index:\n{plans[name]}")

    # Step 3: the setting.
    sweep = []
    chosen = None
    for p in args.probes:
        run_set(primary, queries[:20], p, args.rerank)    # warm-up
        ids, lat = run_set(primary, queries, p, args.rerank)
        r = {"probes": p, "rerank": args.rerank, "recall@10": datasets.recall_at(ids, truth),
             **pgclient.latency_summary(lat)}
        sweep.append(r)
        log(f"primary probes {p:3d} rerank {args.rerank}: recall@10 {r['recall@10']:.3f}  "
            f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms (one client)")
        if r["recall@10"] >= TARGET:
            chosen = p
            break
    if chosen is None:
        raise SystemExit(f"no probes value in {args.probes} reaches recall@10 {TARGET}")
    before = {}
    for name, c in zip(names, conns):
        ids, lat = run_set(c, queries, chosen, args.rerank)
        before[name] = {"recall@10": datasets.recall_at(ids, truth), **pgclient.latency_summary(lat), "ids": ids}
        log(f"{name}: recall@10 {before[name]['recall@10']:.3f} at probes {chosen} before the write load")

    # Steps 4 and 5.
    workdir = tempfile.mkdtemp(prefix="replicas-bench-")
    script = os.path.join(workdir, "search.sql")
    with open(script, "w") as f:
        f.write(SCRIPT.format(last=len(queries) - 1))
    options = {"ivfpq.probes": chosen, "ivfpq.rerank": args.rerank}
    writer = WriteLoad(args.primary, pool, n, args)
    sampler = LagSampler(args.primary)
    layouts = [1, 2, 3]
    runs = []
    sampler.start()
    writer.start()
    t_load = time.perf_counter()
    try:
        for rnd in range(args.rounds):
            order = layouts[rnd % 3:] + layouts[:rnd % 3]
            for servers in order:
                tps, lat, errors = pgbench_layout(dsns[:servers], args.clients, args.seconds, script, options, workdir)
                run = {"round": rnd + 1, "servers": servers, "qps": sum(tps), "qps_per_server": tps,
                       "transactions": int(lat.size), "errors": errors}
                if lat.size:
                    run.update(p50_ms=1000 * float(np.percentile(lat, 50)), p99_ms=1000 * float(np.percentile(lat, 99)))
                run["latencies"] = lat
                runs.append(run)
                log(f"round {rnd + 1}: {servers} server(s), {args.clients} clients: {sum(tps):.1f} QPS "
                    f"({', '.join(f'{t:.1f}' for t in tps)}), p50 {run.get('p50_ms', float('nan')):.2f} ms, "
                    f"p99 {run.get('p99_ms', float('nan')):.2f} ms{'; ERRORS ' + repr(errors) if errors else ''}")
                if writer.stats["errors"]:
                    raise RuntimeError(f"write load failed: {writer.stats['errors']}")
    finally:
        writer.stop()
        load_s = time.perf_counter() - t_load
        # Step 6: catch-up, sampled until the end.
        final_catchup_s = wait_caught_up(primary, names[1:])
        sampler.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if writer.stats["errors"]:
        raise RuntimeError(f"write load failed: {writer.stats['errors']}")
    log(f"write load: {writer.stats['inserted']} rows inserted, {writer.stats['deleted']} deleted, "
        f"{writer.stats['vacuums']} VACUUMs in {load_s:.0f} s; standbys caught up {final_catchup_s:.2f} s after it stopped")

    live_ids, live_pos = writer.live_rows()
    count = primary.execute("SELECT count(*) FROM items").fetchone()[0]
    assert count == n + len(live_ids), (count, n, len(live_ids))
    all_ids = np.concatenate([np.arange(n, dtype=np.int64), live_ids])
    all_vectors = np.concatenate([np.asarray(ds.base, dtype=np.float32), np.asarray(pool[live_pos], dtype=np.float32)])
    truth_after = exact_top(all_vectors, all_ids, queries)
    after = {}
    for name, c in zip(names, conns):
        ids, lat = run_set(c, queries, chosen, args.rerank)
        after[name] = {"recall@10": datasets.recall_at(ids, truth_after), **pgclient.latency_summary(lat), "ids": ids}
    equal = {name: sum(a == b for a, b in zip(after[name]["ids"], after["primary"]["ids"])) for name in names[1:]}
    equal_before = {name: sum(a == b for a, b in zip(before[name]["ids"], before["primary"]["ids"])) for name in names[1:]}
    for name in names[1:]:
        log(f"{name}: {equal[name]} of {len(queries)} answers equal to the primary's after catch-up "
            f"(before the load {equal_before[name]}); recall@10 {after[name]['recall@10']:.3f}")

    by_layout = {}
    for servers in layouts:
        rs = [r for r in runs if r["servers"] == servers]
        lat = np.concatenate([r["latencies"] for r in rs])
        by_layout[servers] = {"qps_median": statistics.median(r["qps"] for r in rs),
                              "qps_rounds": [r["qps"] for r in rs],
                              "p50_ms": 1000 * float(np.percentile(lat, 50)) if lat.size else None,
                              "p99_ms": 1000 * float(np.percentile(lat, 99)) if lat.size else None,
                              "errors": sum(len(r["errors"]) for r in rs)}
    for r in runs:
        del r["latencies"]
    for d in (before, after):
        for v in d.values():
            del v["ids"]
    base_qps = by_layout[1]["qps_median"]
    ratios = {s: (by_layout[s]["qps_median"] / base_qps if base_qps else None) for s in layouts}
    environment["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    ws = writer.stats
    result = {"dataset": {"name": ds.name, "rows": n, "dim": dim}, "nqueries": len(queries), "clients": args.clients,
              "seconds": args.seconds, "rounds": args.rounds, "probes": chosen, "rerank": args.rerank,
              "environment": environment, "settings": settings, "build": state["build"], "plans": plans,
              "sweep": sweep, "before": before, "runs": runs, "by_layout": by_layout, "qps_ratio_over_one": ratios,
              "write_load": {"insert_rows": args.insert_rows, "tick_s": args.tick, "window": args.window,
                             "vacuum_every_s": args.vacuum_every, "seconds": load_s, "inserted": ws["inserted"],
                             "deleted": ws["deleted"], "vacuums": ws["vacuums"], "late_ticks": ws["late_ticks"],
                             "insert_batch_ms_median": 1000 * statistics.median(ws["insert_s"]) if ws["insert_s"] else None,
                             "vacuum_s_median": statistics.median(ws["vacuum_s"]) if ws["vacuum_s"] else None},
              "lag": sampler.summary(), "initial_catchup_s": initial_catchup_s, "final_catchup_s": final_catchup_s,
              "rows_after": int(count), "after": after, "equal_after_catchup": equal, "equal_before_load": equal_before,
              "total_s": time.perf_counter() - t_start}
    path = args.results or ivfpq_bench.default_results_path(ds.name, "replicas-")
    ivfpq_bench.write_results(result, path, markdown(result), summary(result))
    for c in conns:
        c.close()
    if any(equal[name] != len(queries) for name in equal) or any(b["errors"] for b in by_layout.values()):
        raise SystemExit("a standby's answers differ from the primary's, or queries failed (see the results)")


def int_keys(d):
    """The layout dicts keyed by server count, also when read back from the JSON file."""
    return {int(k): v for k, v in d.items()}


def summary(result):
    b, r = int_keys(result["by_layout"]), int_keys(result["qps_ratio_over_one"])
    out = [f"{s} server(s), {result['clients']} clients: {b[s]['qps_median']:.1f} QPS (x{fmt(r[s], '.2f')}), "
           f"p50 {fmt(b[s]['p50_ms'], '.2f')} ms, p99 {fmt(b[s]['p99_ms'], '.2f')} ms" for s in sorted(b)]
    out.append(f"at probes {result['probes']} / rerank {result['rerank']}: recall@10 "
               + ", ".join(f"{k} {v['recall@10']:.3f}" for k, v in result["before"].items()))
    for name, lag in result["lag"].items():
        out.append(f"{name} lag under the write load: replay_lag median {lag['replay_lag_ms']['median']:.0f} ms, "
                   f"max {lag['replay_lag_ms']['max']:.0f} ms; behind median {lag['gap_bytes']['median'] / 1024:.0f} kB, "
                   f"max {lag['gap_bytes']['max'] / 1024:.0f} kB")
    out.append(f"after catch-up ({result['final_catchup_s']:.2f} s): answers equal to the primary's "
               + ", ".join(f"{k} {v} of {result['nqueries']}" for k, v in result["equal_after_catchup"].items()))
    return out


def markdown(result):
    env, ds, bl, wl = result["environment"], result["dataset"], result["build"], result["write_load"]
    L = [f"# ivfpq: read scaling with two streaming replicas: {ds['name']} ({ds['rows']} x {ds['dim']}, l2)",
         "", "```", env.get("wrapper") or env["command"], "```", "", "Python command (measure phase):", "", "```",
         env["command"], "```", "",
         "## Machine and settings", "",
         f"- date: {env['date']}; measure phase took {result['total_s']:.0f} s",
         f"- CPU: {env['cpu']}, {env['cores']} cores, shared by the three servers, the write load, pgbench and "
         f"Python; load average at start {', '.join(map(str, env['load_average']))}, at the end "
         f"{', '.join(map(str, env['load_average_end']))}",
         f"- {env['postgres']}; git {env['git']}",
         f"- three clusters on this machine (bench/replicas.sh): the primary and two hot standbys made with "
         f"`pg_basebackup -R -X stream` over 127.0.0.1 after the load, streaming from the primary, "
         f"hot_standby_feedback on; shared_buffers {env.get('shared_buffers')} each; ivfpq preloaded on all three; "
         f"the table pg_prewarm'ed on each",
         f"- the index: {bl['sql']} ({bl['build_s']:.1f} s, {bl['index_bytes'] / 2**20:.1f} MiB; table "
         f"{bl['table_bytes'] / 2**20:.0f} MiB, loaded in {bl['load_s']:.1f} s)",
         f"- setting: ivfpq.probes {result['probes']}, ivfpq.rerank {result['rerank']}: the smallest probes whose "
         f"recall@10 on the primary is >= {TARGET} over {result['nqueries']} queries, one at a time (sweep below)",
         f"- queries: pgbench -M prepared, {result['clients']} clients in all, {result['seconds']} s per run, "
         f"{result['rounds']} rounds, the layouts' order rotating per round; one pgbench per server at once, the "
         f"clients split evenly; each transaction a random query of the set (`SELECT id FROM items ORDER BY "
         f"embedding <-> (SELECT embedding FROM bench_queries WHERE qid = :q) LIMIT 10`); QPS the sum over the "
         f"servers (median of the rounds), latencies over all transactions of a layout (pgbench -l)",
         f"- write load on the primary throughout: every {wl['tick_s']:g} s a COPY of {wl['insert_rows']} new rows, "
         f"the oldest inserted batch deleted once {wl['window']} are in, VACUUM every {wl['vacuum_every_s']:g} s; "
         f"{wl['inserted']} rows inserted, {wl['deleted']} deleted, {wl['vacuums']} VACUUMs in {wl['seconds']:.0f} s "
         f"(median insert batch {fmt(wl['insert_batch_ms_median'], '.0f')} ms, VACUUM "
         f"{fmt(wl['vacuum_s_median'], '.1f')} s; {wl['late_ticks']} ticks late)",
         "", "## Summary", ""] + [f"- {s}" for s in summary(result)] + [
         "", "## Queries per second, clients spread over 1, 2 and 3 servers (under the write load)", "",
         "| servers | where the clients are | QPS (median) | x one server | rounds | p50 ms | p99 ms | errors |",
         "|---|---|---|---|---|---|---|---|"]
    where = {1: f"{result['clients']} on the primary", 2: "split over the primary and standby1",
             3: "split over the primary and both standbys"}
    ratios = int_keys(result["qps_ratio_over_one"])
    for s, b in sorted(int_keys(result["by_layout"]).items()):
        L.append(f"| {s} | {where[s]} | {b['qps_median']:.1f} | {fmt(ratios[s], '.2f')} | "
                 f"{', '.join(f'{q:.1f}' for q in b['qps_rounds'])} | {fmt(b['p50_ms'], '.2f')} | "
                 f"{fmt(b['p99_ms'], '.2f')} | {b['errors']} |")
    L += ["", "Per run (QPS per server in the order primary, standby1, standby2):", "",
          "| round | servers | QPS | per server | transactions | p50 ms | p99 ms |", "|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        L.append(f"| {r['round']} | {r['servers']} | {r['qps']:.1f} | {', '.join(f'{q:.1f}' for q in r['qps_per_server'])} "
                 f"| {r['transactions']} | {fmt(r.get('p50_ms'), '.2f')} | {fmt(r.get('p99_ms'), '.2f')} |")
    L += ["", "## Replica lag under the write load", "",
          f"Sampled from pg_stat_replication on the primary every 0.5 s while the write load ran: `replay_lag` "
          f"(NULL, counted as 0, when the standby had nothing left to replay) and "
          f"`pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)`, the WAL not yet replayed.", "",
          "| standby | samples | replay_lag median ms | p95 ms | max ms | behind median kB | p95 kB | max kB |",
          "|---|---|---|---|---|---|---|---|"]
    for name, lag in result["lag"].items():
        L.append(f"| {name} | {lag['samples']} | {lag['replay_lag_ms']['median']:.0f} | {lag['replay_lag_ms']['p95']:.0f} | "
                 f"{lag['replay_lag_ms']['max']:.0f} | {lag['gap_bytes']['median'] / 1024:.0f} | "
                 f"{lag['gap_bytes']['p95'] / 1024:.0f} | {lag['gap_bytes']['max'] / 1024:.0f} |")
    L += ["", f"After the load the standbys had replayed everything {result['initial_catchup_s']:.2f} s after the "
          f"measurement started; after the write load stopped, {result['final_catchup_s']:.2f} s.", "",
          "## Answers on the standbys", "",
          f"Every query of the set once, one at a time, at probes {result['probes']} / rerank {result['rerank']}, on "
          f"each server: before the write load, and after it once both standbys had replayed the primary's last LSN "
          f"({result['rows_after']} rows then; recall against exact search over those rows).", "",
          "| server | recall@10 before | answers equal to the primary's before | recall@10 after | answers equal after | "
          "p50 ms after (one client, quiet) |", "|---|---|---|---|---|---|"]
    for name in result["before"]:
        eq_b = result["equal_before_load"].get(name, result["nqueries"])
        eq_a = result["equal_after_catchup"].get(name, result["nqueries"])
        L.append(f"| {name} | {result['before'][name]['recall@10']:.3f} | {eq_b} of {result['nqueries']} | "
                 f"{result['after'][name]['recall@10']:.3f} | {eq_a} of {result['nqueries']} | "
                 f"{result['after'][name]['p50_ms']:.2f} |")
    L += ["", "## Probes sweep on the primary (one client, no write load)", "",
          "| probes | recall@10 | QPS | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    for r in result["sweep"]:
        L.append(f"| {r['probes']} | {r['recall@10']:.3f} | {r['qps']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    L += ["", "Standby plan:", "", "```", result["plans"]["standby1"], "```", "", WHAT_IT_SHOWS, ""]
    return "\n".join(L)


WHAT_IT_SHOWS = """## What a 2-core machine can and cannot show

The three servers, the primary's write load, the pgbench clients and this script share 2 cores.
A k-NN query is CPU-bound (the quantizer, the lists' codes, the rerank of table rows, all in
memory), so spreading the same clients over 3 servers cannot give 3 times the queries: the
cores are the limit, not the server, and 6 clients already keep both cores busy on one server.
Expect a ratio near 1, within the spread of the rounds (other jobs share this machine); below 1
would be the cost of the extra processes (three sets of backends, two WAL receivers and startup
processes replaying the writes, three copies of the table in memory). One effect favours the
standbys even here: on one server the queries share the primary with the write load (COPY into
the index, DELETE, VACUUM), on a standby only with WAL replay, and in the per-run table the
standbys answer more queries than the primary in the same run. What the run does show: (1) standbys serve the same
queries under a write load with no errors; (2) how far behind they are while the primary
inserts, deletes and VACUUMs, and how fast they catch up; (3) that once caught up their answers
are the primary's, id for id; (4) the overhead of replication on one machine. On separate
machines each standby adds its own cores, so the read QPS grows with the number of servers
(each answers whole queries alone, nothing is merged) until the primary's WAL stream or the
write load on it is the limit; that is what this figure cannot measure."""


def main(argv=None):
    args = parse_args(argv)
    if args.phase == "load":
        phase_load(args)
    else:
        phase_measure(args)


if __name__ == "__main__":
    main()
