#!/usr/bin/python3
"""Side-by-side benchmark: ivfpq inside Postgres vs FAISS in-process (one thread).

Steps (each safe to rerun; the table is dropped and recreated):
  1. load the base vectors into items (id int PRIMARY KEY, embedding vector(d))
     with a binary COPY; record load time and pg_table_size;
  2. exact search (sequential scan) for a few queries, as a reference;
  3. CREATE INDEX ... USING ivfpq (embedding <opclass>) WITH (lists, m), timed,
     under the given maintenance_work_mem; record pg_relation_size;
  4. for each (ivfpq.probes, ivfpq.rerank): run the queries one at a time
     through a prepared statement with a binary vector parameter; QPS, latency
     percentiles and recall@10 against exact ground truth;
  5. the FAISS baseline (IndexIVFPQ + IndexRefineFlat, same lists and m, same
     probes x rerank sweep, one thread) in the same run, built before the
     sweep and measured interleaved: each setting runs on ivfpq, then at once
     on FAISS, so machine noise hits both sides of a ratio alike;
  6. ratios (QPS at equal recall, build time, index size / table size) printed
     and written as Markdown + JSON to bench/results/<dataset>-<date>.{md,json}.

If the ivfpq access method is not installed, it says so and benchmarks exact
search (sequential scan) on the Postgres side instead, so the pipeline can be
tested on a subset:  python3 bench/ivfpq_bench.py fashion-mnist --base-limit 5000 --nqueries 50

Connection: --dsn, or the libpq environment (PGHOST, PGPORT, ...); normally
started by bench/run.sh, which provides a throwaway cluster.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys

import numpy as np
import psycopg

import datasets
import faiss_baseline
import pgclient

HERE = os.path.dirname(os.path.abspath(__file__))
K = 10
RECALL_TARGETS = (0.9, 0.95, 0.98, 0.99)


def log(msg=""):
    print(msg, flush=True)


def int_list(text):
    return [int(x) for x in text.split(",") if x]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", help="fashion-mnist | generated[:N] | siftlike[:N]")
    ap.add_argument("--lists", type=int, default=256, help="index lists (default %(default)s)")
    ap.add_argument("--m", type=int, default=56, help="PQ subquantizers (default %(default)s)")
    ap.add_argument("--nbits", type=int, choices=(4, 8), default=8,
                    help="bits per ivfpq sub-quantizer code (default %(default)s); with 4 the ivfpq index "
                         "gets WITH (m = M, nbits = 4) and FAISS (always 8 bits) m = M / 2: the same code bytes")
    ap.add_argument("--probes", type=int_list, default=[1, 2, 4, 8, 16, 32, 64, 128],
                    help="comma-separated ivfpq.probes / nprobe values (default %(default)s)")
    ap.add_argument("--rerank", type=int_list, default=[0, 10, 20, 50, 100, 200, 500],
                    help="comma-separated ivfpq.rerank values, 0 = PQ order only (default %(default)s)")
    ap.add_argument("--metric", choices=sorted(pgclient.OPCLASSES), default="l2",
                    help="l2 (vector_l2_ops), ip (vector_ip_ops) or cosine (vector_cosine_ops)")
    ap.add_argument("--nqueries", type=int, default=1000, help="queries per setting (default %(default)s)")
    ap.add_argument("--exact-nqueries", type=int, default=100,
                    help="queries for the exact-search reference when the index exists (default %(default)s)")
    ap.add_argument("--base-limit", type=int, help="load only the first N base rows")
    ap.add_argument("--dsn", default="", help="libpq connection string (default: libpq environment)")
    ap.add_argument("--maintenance-work-mem", default="2GB", help="for CREATE INDEX (default %(default)s)")
    ap.add_argument("--index-options", default="", help="extra WITH (...) options, e.g. 'nbits = 8'")
    ap.add_argument("--storage", choices=("plain", "main", "external", "extended"),
                    help="column storage strategy for embedding (default: the type's, main); "
                    "main lets pglz compress vectors inline, plain stores them raw")
    ap.add_argument("--table-options", default="",
                    help="CREATE TABLE ... WITH (...) options, e.g. 'toast_tuple_target = 8160' "
                    "(keeps vectors up to ~2000 dims inline and uncompressed)")
    ap.add_argument("--reuse-table", action="store_true",
                    help="keep an existing items table if it already holds exactly this base set")
    ap.add_argument("--no-faiss", action="store_true", help="skip the FAISS baseline")
    ap.add_argument("--faiss-train-size", type=int, help="FAISS trains on a sample of N rows (default: all)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="sweep the settings this many times, both sides back to back each time; "
                         "report each setting's median QPS and latency (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed queries before each setting")
    ap.add_argument("--results", help="output path (.md and .json written next to each other); "
                    "default bench/results/<dataset>-<date>")
    return ap.parse_args(argv)


# --------------------------------------------------------------------------
# Environment notes
# --------------------------------------------------------------------------

def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def git_revision():
    try:
        out = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", HERE, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "none"


SETTINGS = ("shared_buffers", "maintenance_work_mem", "work_mem", "jit", "max_parallel_maintenance_workers",
            "max_parallel_workers_per_gather", "effective_cache_size", "fsync")


def ivfpq_settings(conn):
    """Every ivfpq.* setting of this session (the library is loaded first, so all are listed)."""
    try:
        conn.execute("SELECT '[1]'::vector")
    except psycopg.Error:
        pass
    names = [r[0] for r in conn.execute("SELECT name FROM pg_settings WHERE name LIKE 'ivfpq.%' ORDER BY name")]
    return {name: conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0] for name in names}


def server_settings(conn):
    out = {}
    for name in SETTINGS:
        out[name] = conn.execute("SELECT current_setting(%s, true)", (name,)).fetchone()[0]
    out.update(ivfpq_settings(conn))
    return out


def library_notes(conn):
    """The ivfpq library Postgres loads (path, mtime, sha256 prefix) and whether it is this
    tree's build: make install from another tree swaps it for new connections."""
    import hashlib
    try:
        libdir = conn.execute("SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'").fetchone()[0]
        path = os.path.join(libdir, "ivfpq.so")
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    except (psycopg.Error, OSError) as e:
        return {"error": str(e)}
    tree = os.path.join(os.path.dirname(HERE), "ivfpq.so")
    try:
        with open(tree, "rb") as f:
            same = hashlib.sha256(f.read()).hexdigest() == digest
    except OSError:
        same = None
    mtime = datetime.datetime.fromtimestamp(os.path.getmtime(path)).astimezone().isoformat(timespec="seconds")
    return {"path": path, "mtime": mtime, "sha256": digest[:16], "same_as_tree_build": same}


def machine_notes(conn):
    import faiss
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "postgres": conn.execute("SELECT version()").fetchone()[0],
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "psycopg": psycopg.__version__,
        "git": git_revision(),
        "library": library_notes(conn),
        "command": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
    }


# --------------------------------------------------------------------------
# Postgres side
# --------------------------------------------------------------------------

def measure(conn, queries, truth, metric, warmup, table="items"):
    """Run the queries one at a time; return latency summary + recall@10."""
    cpu = {}
    ids, lat = pgclient.run_queries(conn, queries, metric, K, table, warmup=warmup, cpu=cpu)
    out = pgclient.latency_summary(lat)
    out["recall@10"] = datasets.recall_at(ids, truth)
    # Queries per CPU second, backend and client together (FAISS: its process's).
    out["cpu_qps"] = len(queries) / max(cpu["backend_s"] + cpu["client_s"], 1e-6)
    return out


def index_options(lists=None, m=None, extra_options=""):
    """The WITH (...) text of an ivfpq index: lists and m when given, then extra options."""
    parts = [f"lists = {lists}" if lists else "", f"m = {m}" if m else "", extra_options or ""]
    return ", ".join(p for p in parts if p)


def index_stats(conn, index):
    """ivfpq_index_stats(index) as a dict, or None (logged) when it fails."""
    try:
        cur = conn.execute("SELECT * FROM ivfpq_index_stats(%s::regclass)", (index,))
        names = [c.name for c in cur.description]
        return dict(zip(names, cur.fetchone()))
    except psycopg.Error as e:
        log(f"pg: ivfpq_index_stats failed: {e}")
        return None


def create_index(conn, metric, options, maintenance_work_mem, table="items", index="items_embedding_ivfpq",
                 verbose=True):
    """Drop and create an ivfpq index WITH (options), after a CHECKPOINT; return
    (seconds, index size in bytes, ivfpq_index_stats dict or None, the CREATE INDEX text)."""
    conn.execute(f"DROP INDEX IF EXISTS {index}")
    conn.execute(f"SET maintenance_work_mem = '{maintenance_work_mem}'")
    with_clause = f" WITH ({options})" if options else ""
    sql = f"CREATE INDEX {index} ON {table} USING ivfpq (embedding {pgclient.OPCLASSES[metric]}){with_clause}"
    if verbose:
        log(f"pg: {sql}  -- maintenance_work_mem = {maintenance_work_mem}")
    try:
        conn.execute("CHECKPOINT")
    except psycopg.Error:
        pass
    secs, _ = timed_with_notices(conn, sql, "pg", index)
    size = conn.execute("SELECT pg_relation_size(%s::regclass)", (index,)).fetchone()[0]
    return secs, size, index_stats(conn, index), sql


def timed_with_notices(conn, sql, prefix, index):
    """Run sql and time it; log the NOTICEs it raised as '<prefix>: NOTICE (<index>): ...'
    and return (seconds, notices)."""
    notices = []
    handler = lambda d: notices.append(d.message_primary)  # noqa: E731
    conn.add_notice_handler(handler)
    try:
        secs = pgclient.timed(conn, sql)
    finally:
        conn.remove_notice_handler(handler)
    for n in notices:
        log(f"{prefix}: NOTICE ({index}): {n}")
    return secs, notices


def sweep_settings(probes, reranks, max_probes=None):
    """The (probes, rerank) pairs of a sweep: rerank 0 (PQ order) or at least K, probes <= max_probes."""
    return [(p, r) for p in probes for r in reranks
            if (not r or r >= K) and (max_probes is None or p <= max_probes)]


def measure_setting(conn, probes, rerank, queries, truth, metric, warmup, table="items", label="pg"):
    """SET ivfpq.probes and ivfpq.rerank, run the queries; return the row (setting, latency, recall)."""
    conn.execute(f"SET ivfpq.probes = {int(probes)}")
    conn.execute(f"SET ivfpq.rerank = {int(rerank)}")
    row = {"probes": probes, "rerank": rerank, **measure(conn, queries, truth, metric, warmup, table)}
    log(f"{label}: probes {probes:4d} rerank {rerank:4d}  recall@10 {row['recall@10']:.3f}  "
        f"QPS {row['qps']:8.1f}  CPU QPS {row['cpu_qps']:8.1f}  p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms")
    return row


def median_rows(rows, key):
    """Rows of repeated rounds merged per setting (key: the setting's fields):
    median QPS and latencies, every round's QPS kept in qps_rounds."""
    groups = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in key), []).append(row)
    merged = []
    for group in groups.values():
        if len(group) == 1:
            merged.append(group[0])
            continue
        row = dict(sorted(group, key=lambda g: g["qps"])[len(group) // 2])
        for field in ("qps", "cpu_qps", "mean_ms", "p50_ms", "p99_ms"):
            if field in row:
                values = sorted(g[field] for g in group)
                row[field] = values[len(values) // 2] if len(values) % 2 else \
                    (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2
        row["qps_rounds"] = [g["qps"] for g in group]
        if all("cpu_qps" in g for g in group):
            row["cpu_qps_rounds"] = [g["cpu_qps"] for g in group]
        merged.append(row)
    return merged


def pg_sweep(conn, queries, truth, metric, probes, reranks, warmup_queries, after_each=None, rounds=1):
    """(probes, rerank) sweep through the ivfpq index; returns rows and plan notes.

    after_each(probes, rerank), if given, runs right after each setting: the
    FAISS baseline measures the same setting there, so both sides of a ratio
    are timed within seconds of each other on this noisy shared machine.
    With rounds > 1 the whole sweep repeats and each setting reports its
    median (median_rows)."""
    plan, notes = pgclient.index_plan(conn, queries[0], lambda text: "items_embedding_ivfpq" in text,
                                      metric, K, log=log)
    rows = []
    for round_ in range(rounds):
        if rounds > 1:
            log(f"round {round_ + 1} of {rounds}")
        for p, r in sweep_settings(probes, reranks):
            rows.append(measure_setting(conn, p, r, queries, truth, metric, warmup_queries))
            if after_each:
                after_each(p, r)
    return median_rows(rows, ("probes", "rerank")), plan, notes


# --------------------------------------------------------------------------
# Comparison and report
# --------------------------------------------------------------------------

def best_at(rows, target, key="qps"):
    ok = [r for r in rows if r["recall@10"] >= target and key in r]
    return max(ok, key=lambda r: r[key]) if ok else None


def compare(result):
    """Ratios ivfpq / FAISS: QPS at recall targets, build time, sizes."""
    pg, fa = result.get("ivfpq"), result.get("faiss")
    out = {"index_size_over_table_size": None, "qps_at_recall": {}, "build_time_ratio": None}
    if pg and pg.get("index_bytes"):
        out["index_size_over_table_size"] = pg["index_bytes"] / result["table"]["table_bytes"]
    if not (pg and fa):
        return out
    out["build_time_ratio"] = pg["build_s"] / fa["build"]["train_add_s"]
    out["index_size_over_faiss_size"] = pg["index_bytes"] / fa["build"]["ivfpq_bytes"]
    for target in RECALL_TARGETS:
        a, b = best_at(pg["rows"], target), best_at(fa["rows"], target)
        out["qps_at_recall"][str(target)] = {
            "ivfpq": a, "faiss": b, "ratio": (a["qps"] / b["qps"]) if a and b else None}
    out["cpu_qps_at_recall"] = {}
    for target in RECALL_TARGETS:
        a, b = best_at(pg["rows"], target, "cpu_qps"), best_at(fa["rows"], target, "cpu_qps")
        if a or b:
            out["cpu_qps_at_recall"][str(target)] = {
                "ivfpq": a, "faiss": b, "ratio": (a["cpu_qps"] / b["cpu_qps"]) if a and b else None}
    return out


def fmt(x, spec=".3f", none="–"):
    return none if x is None else format(x, spec)


def mib(b):
    return f"{b / 2**20:.1f} MiB"


def report_head(title, result, faiss_note=""):
    """The title, exact command line and "Machine and settings" section of a Markdown report."""
    env = result["environment"]
    return [f"# {title}", "", "```", env["command"], "```", "",
            "## Machine and settings", "",
            f"- date: {env['date']}",
            f"- CPU: {env['cpu']}, {env['cores']} cores (shared machine; load average at start "
            f"{', '.join(map(str, env['load_average']))})",
            f"- {env['postgres']}",
            f"- FAISS {env['faiss']}{faiss_note}, numpy {env['numpy']}, psycopg {env['psycopg']}, git {env['git']}",
            "- ivfpq library: " + (", ".join(f"{k} {v}" for k, v in env["library"].items()) if env.get("library") else "?"),
            "- Postgres settings: " + ", ".join(f"{k} = {v}" for k, v in result["settings"].items() if v is not None),
            f"- queries: {result['nqueries']} per setting, issued one at a time (prepared statement, "
            f"binary vector parameter); recall@10 against exact ground truth (FAISS IndexFlat)"
            + (f"; {result['rounds']} rounds of the whole sweep, both sides back to back per setting, "
               f"medians reported" if result.get("rounds", 1) > 1 else ""),
            ""]


def markdown(result):
    """The results as a Markdown report."""
    ds, tbl = result["dataset"], result["table"]
    pg, fa, cmp_ = result.get("ivfpq"), result.get("faiss"), result["comparison"]
    lines = report_head(f"ivfpq benchmark: {ds['name']} ({ds['rows']} x {ds['dim']}, {result['metric']})",
                        result, " (one thread)")
    for n in result.get("notes", []):
        lines.append(f"> {n}")
    if result.get("notes"):
        lines.append("")
    lines += ["## Build and sizes", "", "| | value |", "|---|---|",
              f"| table rows | {tbl['rows']} |",
              f"| COPY + primary key + VACUUM ANALYZE | {tbl['load_s']:.1f} s |" if tbl.get("load_s") is not None
              else "| table load | reused existing table |",
              f"| table size (pg_table_size) | {mib(tbl['table_bytes'])} |",
              f"| table options | {tbl.get('table_options') or '(none)'} |",
              f"| embedding storage; bytes per stored vector (pg_column_size) / raw | {tbl['storage']}; "
              f"{tbl['avg_vector_bytes']:.0f} / {tbl['raw_vector_bytes']} |"]
    if pg:
        lines += [f"| ivfpq CREATE INDEX (maintenance_work_mem {pg['maintenance_work_mem']}) | {pg['build_s']:.1f} s |",
                  f"| ivfpq index size (pg_relation_size) | {mib(pg['index_bytes'])} |",
                  f"| index size / table size | {fmt(cmp_['index_size_over_table_size'])} |"]
    if fa:
        b = fa["build"]
        lines += [f"| FAISS train ({b['train_rows']} rows) | {b['train_s']:.1f} s |",
                  f"| FAISS add | {b['add_s']:.1f} s |",
                  f"| FAISS train + add | {b['train_add_s']:.1f} s |",
                  f"| FAISS IndexIVFPQ size (serialized) | {mib(b['ivfpq_bytes'])} |"]
    if cmp_.get("build_time_ratio") is not None:
        lines.append(f"| build time ratio (ivfpq / FAISS train+add) | {cmp_['build_time_ratio']:.2f} |")
    lines.append("")
    if pg and pg.get("stats"):
        lines += ["ivfpq_index_stats: " + ", ".join(f"{k} = {v}" for k, v in pg["stats"].items()), ""]
    if result.get("exact"):
        e = result["exact"]
        lines += ["## Exact search (sequential scan)", "",
                  "| queries | recall@10 | QPS | mean ms | p50 ms | p99 ms |", "|---|---|---|---|---|---|",
                  f"| {e['nqueries']} | {e['recall@10']:.3f} | {e['qps']:.1f} | {e['mean_ms']:.2f} | "
                  f"{e['p50_ms']:.2f} | {e['p99_ms']:.2f} |", ""]
    if pg or fa:
        lines += ["## Recall@10 and QPS per setting", "",
                  "| probes | rerank | ivfpq recall | ivfpq QPS | ivfpq p50 ms | ivfpq p99 ms "
                  "| FAISS recall | FAISS QPS | QPS ratio | ivfpq CPU QPS | FAISS CPU QPS | CPU QPS ratio |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        frows = {(r["nprobe"], r["rerank"]): r for r in (fa["rows"] if fa else [])}
        keys = [(r["probes"], r["rerank"]) for r in pg["rows"]] if pg else list(frows)
        prow = {(r["probes"], r["rerank"]): r for r in (pg["rows"] if pg else [])}
        for key in keys:
            a, b = prow.get(key), frows.get(key)
            ratio = a["qps"] / b["qps"] if a and b else None
            lines.append(f"| {key[0]} | {key[1]} | {fmt(a and a['recall@10'])} | {fmt(a and a['qps'], '.1f')} "
                         f"| {fmt(a and a['p50_ms'], '.2f')} | {fmt(a and a['p99_ms'], '.2f')} "
                         f"| {fmt(b and b['recall@10'])} | {fmt(b and b['qps'], '.1f')} | {fmt(ratio, '.2f')} "
                         f"| {fmt(a and a.get('cpu_qps'), '.1f')} | {fmt(b and b.get('cpu_qps'), '.1f')} "
                         f"| {fmt(a['cpu_qps'] / b['cpu_qps'] if a and b and a.get('cpu_qps') and b.get('cpu_qps') else None, '.2f')} |")
        lines.append("")
    if cmp_.get("qps_at_recall"):
        lines += best_at_table("## Best QPS at a recall target", [], "QPS", "qps", cmp_["qps_at_recall"])
    if cmp_.get("cpu_qps_at_recall"):
        lines += best_at_table(
            "## Best CPU QPS at a recall target",
            ["Queries per CPU second: ivfpq's backend and client process together, FAISS's process "
             "(on a shared machine CPU time is steadier than wall-clock time; the client's protocol "
             "work counts against ivfpq).", ""],
            "CPU QPS", "cpu_qps", cmp_["cpu_qps_at_recall"])
    return "\n".join(lines)


def best_at_table(title, intro, label, key, best):
    """Markdown lines: per recall target, each side's best (compare()) and the ratio."""
    lines = [title, ""] + intro + [
        f"| recall@10 >= | ivfpq {label} (probes, rerank, recall) | FAISS {label} (nprobe, rerank, recall) "
        "| ivfpq / FAISS |", "|---|---|---|---|"]
    for target, c in best.items():
        a, b = c["ivfpq"], c["faiss"]
        sa = f"{a[key]:.1f} ({a['probes']}, {a['rerank']}, {a['recall@10']:.3f})" if a else "not reached"
        sb = f"{b[key]:.1f} ({b['nprobe']}, {b['rerank']}, {b['recall@10']:.3f})" if b else "not reached"
        lines.append(f"| {target} | {sa} | {sb} | {fmt(c['ratio'], '.2f')} |")
    return lines + [""]


def summary_lines(result):
    """A few lines of headline figures for stdout."""
    cmp_, out = result["comparison"], list(result.get("notes", []))
    pg, fa, exact = result.get("ivfpq"), result.get("faiss"), result.get("exact")
    if exact:
        out.append(f"exact search (seq scan, {exact['nqueries']} queries): {exact['qps']:.1f} QPS, "
                   f"p50 {exact['p50_ms']:.2f} ms, recall@10 {exact['recall@10']:.3f}")
    if pg:
        out.append(f"ivfpq CREATE INDEX {pg['build_s']:.1f} s, index {mib(pg['index_bytes'])}, "
                   f"table {mib(result['table']['table_bytes'])}, "
                   f"index/table {fmt(cmp_['index_size_over_table_size'])}")
    if fa:
        b = fa["build"]
        out.append(f"FAISS train {b['train_s']:.1f} s + add {b['add_s']:.1f} s = {b['train_add_s']:.1f} s")
    if cmp_.get("build_time_ratio") is not None:
        out.append(f"build time ratio ivfpq / FAISS: {cmp_['build_time_ratio']:.2f}")
    for target, c in cmp_.get("qps_at_recall", {}).items():
        a, b = c["ivfpq"], c["faiss"]
        sa = f"{a['qps']:.1f} QPS" if a else "not reached"
        sb = f"{b['qps']:.1f} QPS" if b else "not reached"
        out.append(f"recall@10 >= {target}: ivfpq {sa}, FAISS {sb}, ratio {fmt(c['ratio'], '.2f')}")
    for target, c in cmp_.get("cpu_qps_at_recall", {}).items():
        a, b = c["ivfpq"], c["faiss"]
        sa = f"{a['cpu_qps']:.1f}" if a else "not reached"
        sb = f"{b['cpu_qps']:.1f}" if b else "not reached"
        out.append(f"recall@10 >= {target}, CPU QPS: ivfpq {sa}, FAISS {sb}, ratio {fmt(c['ratio'], '.2f')}")
    return out


def wrapped_report_head(title, result):
    """report_head() for the benchmarks run through a wrapper script (churn, filtered): without
    the queries line, with the wrapper's command line and the load average at the end."""
    lines = [ln for ln in report_head(title, result) if not ln.startswith("- queries:")]
    while lines and not lines[-1]:
        lines.pop()
    env = result["environment"]
    if env.get("wrapper"):
        at = lines.index("## Machine and settings") - 1
        lines[at:at] = ["", "Through the wrapper:", "", "```", env["wrapper"], "```"]
    lines.append(f"- load average at the end: {', '.join(map(str, env.get('load_average_end', [])))}")
    return lines


def finish_environment(conn, environment, notes):
    """Record the load average at the end, and a note if the installed library changed during the run."""
    environment["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    library = library_notes(conn)
    if library.get("sha256") != environment["library"].get("sha256"):
        notes.append(f"the installed ivfpq library changed during the run ({library.get('mtime')}, "
                     f"sha256 {library.get('sha256')}): connections opened after that loaded it")


def wrapper_command(script, wrapper):
    """The `bash bench/<wrapper> ...` command line when bench/run.sh started `script`
    for that wrapper (it sets IVFPQ_BENCH_SCRIPT), else None."""
    if os.environ.get("IVFPQ_BENCH_SCRIPT") != script:
        return None
    env = " ".join(f"{k}={shlex.quote(os.environ[k])}" for k in ("IVFPQ_NO_INSTALL", "IVFPQ_SHARED_BUFFERS")
                   if os.environ.get(k))
    return (env + " " if env else "") + f"bash bench/{wrapper} " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def default_results_path(ds_name, prefix=""):
    """bench/results/<prefix><dataset>-<date> (no extension)."""
    safe = ds_name.replace(":", "-").replace("[", "-").replace("]", "")
    return os.path.join(HERE, "results", f"{prefix}{safe}-{datetime.date.today().isoformat()}")


def write_results(result, path, markdown_text, summary):
    """Write result as path.json and markdown_text as path.md (path may end in .md/.json),
    then print the summary lines and where the files are."""
    stem, ext = os.path.splitext(path)
    path = stem if ext in (".md", ".json") else path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".json", "w") as f:
        json.dump(result, f, indent=1, default=str)
    with open(path + ".md", "w") as f:
        f.write(markdown_text)
    log("")
    for line in summary:
        log(line)
    log(f"results: {path}.md, {path}.json")


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
    truth = ds.ground_truth(args.metric)[:nq]
    log(f"dataset {ds.name}: {ds.base.shape[0]} x {ds.dim}, {nq} queries, metric {args.metric}")

    conn = psycopg.connect(args.dsn, autocommit=True)
    conn.execute("CREATE EXTENSION IF NOT EXISTS ivfpq")
    pgclient.register_vector(conn)
    result = {"dataset": {"name": ds.name, "rows": int(ds.base.shape[0]), "dim": int(ds.dim)},
              "metric": args.metric, "lists": args.lists, "m": args.m, "nbits": args.nbits,
              "faiss_m": args.m * args.nbits // 8, "nqueries": nq, "rounds": args.rounds,
              "probes": args.probes, "reranks": args.rerank,
              "environment": machine_notes(conn), "notes": []}

    result["settings"] = server_settings(conn)

    # 1. table
    if args.reuse_table and pgclient.table_matches(conn, "items", ds.base.shape[0], ds.dim):
        log("pg: reusing existing items table")
        load_s = None
    else:
        log(f"pg: loading {ds.base.shape[0]} rows into items (binary COPY)")
        load_s = pgclient.load_table(conn, ds.base, log=log, storage=args.storage,
                                     table_options=args.table_options or None)
        log(f"pg: loaded in {load_s:.1f} s")
    table_bytes = conn.execute("SELECT pg_table_size('items')").fetchone()[0]
    pgclient.prewarm(conn, "items")
    storage, avg_bytes = conn.execute(
        "SELECT (SELECT attstorage FROM pg_attribute WHERE attrelid = 'items'::regclass "
        "AND attname = 'embedding'), (SELECT avg(pg_column_size(embedding))::float8 FROM "
        "(SELECT embedding FROM items LIMIT 1000) s)").fetchone()
    storage = {"p": "plain", "m": "main", "e": "external", "x": "extended"}.get(storage, storage)
    result["table"] = {"rows": int(ds.base.shape[0]), "load_s": load_s, "table_bytes": table_bytes,
                       "storage": storage, "table_options": args.table_options, "avg_vector_bytes": avg_bytes, "raw_vector_bytes": 8 + 4 * ds.dim}
    log(f"pg: table size {mib(table_bytes)}, embedding storage {storage}, "
        f"{avg_bytes:.0f} bytes per stored vector (raw {8 + 4 * ds.dim})")

    # 2. exact search reference (before any index exists, so it is a sequential scan)
    have_am = pgclient.am_exists(conn)
    conn.execute("DROP INDEX IF EXISTS items_embedding_ivfpq")
    exact_nq = nq if not have_am else min(nq, args.exact_nqueries)
    if not have_am:
        msg = "ivfpq access method not installed: Postgres side falls back to exact search (sequential scan)"
        log("pg: " + msg)
        result["notes"].append(msg)
    if exact_nq:
        conn.execute("SET enable_indexscan = off")
        exact = measure(conn, queries[:exact_nq], truth[:exact_nq], args.metric, spare[:5])
        conn.execute("RESET enable_indexscan")
        exact["nqueries"] = exact_nq
        result["exact"] = exact
        log(f"pg: exact search ({exact_nq} queries): recall@10 {exact['recall@10']:.3f}  QPS {exact['qps']:.1f}  "
            f"p50 {exact['p50_ms']:.2f} ms  p99 {exact['p99_ms']:.2f} ms")

    # FAISS baseline built up front, so that each setting is then measured on
    # both sides back to back (interleaved) rather than in two separate sweeps.
    faiss_state = None
    faiss_rows = []
    if not args.no_faiss:
        faiss_state = faiss_baseline.build_baseline(ds, args.lists, args.m * args.nbits // 8, args.metric, nq,
                                                    args.faiss_train_size, threads=1, log=log)

    def faiss_same_setting(p, r):
        if faiss_state is not None and p <= args.lists:
            faiss_rows.append(faiss_baseline.measure_setting(faiss_state, p, r, args.warmup, log))

    # 3-4. ivfpq index
    if have_am:
        build_s, index_bytes, stats, sql = create_index(conn, args.metric,
                                                        index_options(args.lists, args.m, ", ".join(
                                                            x for x in (f"nbits = {args.nbits}" if args.nbits != 8 else "",
                                                                        args.index_options) if x)),
                                                        args.maintenance_work_mem)
        log(f"pg: CREATE INDEX {build_s:.1f} s, index size {mib(index_bytes)}")
        pgclient.prewarm(conn, "items_embedding_ivfpq")
        rows, plan, notes = pg_sweep(conn, queries, truth, args.metric, args.probes, args.rerank, spare,
                                     after_each=faiss_same_setting, rounds=args.rounds)
        result["notes"] += notes
        result["ivfpq"] = {"build_s": build_s, "index_bytes": index_bytes, "stats": stats, "sql": sql,
                           "maintenance_work_mem": args.maintenance_work_mem, "plan": plan, "rows": rows}
    conn.close()

    # 5. FAISS baseline (its sweep ran interleaved with ours; alone if there was no index)
    if faiss_state is not None:
        if not faiss_rows:
            for p, r in sweep_settings(args.probes, args.rerank, args.lists):
                faiss_same_setting(p, r)
        result["faiss"] = faiss_baseline.result_dict(faiss_state, median_rows(faiss_rows, ("nprobe", "rerank")))

    # 6. report
    result["comparison"] = compare(result)
    write_results(result, args.results or default_results_path(ds.name), markdown(result), summary_lines(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
