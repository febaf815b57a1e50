#!/usr/bin/env bash
# bench/perf_profile.sh -- where a backend's time goes, with perf: the profile
# behind the "where the time goes" figures in README and bench/results.
#
#   bash bench/perf_profile.sh query  [dataset] [lists] [m] [probes] [rerank] [nbits]
#   bash bench/perf_profile.sh insert [dataset] [lists] [m]
#
#   query   loads the dataset (default siftlike:200000, lists 400, m 16),
#           builds the index, runs 300 untimed queries, then records the
#           backend with `perf record -g` while it runs 2000 prepared queries
#           one at a time (ivfpq.probes / ivfpq.rerank: default 32 / 50;
#           nbits 8, or 4 for the fast-scan codes).
#   insert  loads 100000 rows of generated:200000 (768 dims; lists default
#           1000, m 96), builds the index, then records the backend while it
#           inserts 20000 rows in binary COPY batches of 100, after timing the
#           same inserts into a table without a vector index.
#
# Prints the rate and perf's top symbols (self time); the recording stays in
# .tmp/perf-<mode>.data for `perf report -i`.  Throwaway cluster "perf" under
# .tmp, stopped at the end.  IVFPQ_NO_INSTALL=1 uses the installed extension.
# Needs perf (Debian package linux-perf), which the project does not install.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../test/lib/pg.sh
source "$here/../test/lib/pg.sh"

mode="${1:-query}"
case "$mode" in
    query)  dataset="${2:-siftlike:200000}"; lists="${3:-400}"; m="${4:-16}" ;;
    insert) dataset="${2:-generated:200000}"; lists="${3:-1000}"; m="${4:-96}" ;;
    *) echo "usage: $0 query|insert [dataset] [lists] [m] [probes] [rerank]" >&2; exit 2 ;;
esac
probes="${5:-32}"
rerank="${6:-50}"
nbits="${7:-8}"
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }

ivfpq_install_deps
[ "${IVFPQ_NO_INSTALL:-0}" = 1 ] || ivfpq_build_install
IVFPQ_PG_CONF="autovacuum = off
shared_buffers = 2GB
maintenance_work_mem = 2GB
jit = off" ivfpq_cluster_start perf
data="$IVFPQ_ROOT/.tmp/perf-$mode.data"
[ "$nbits" = 8 ] || data="$IVFPQ_ROOT/.tmp/perf-$mode-nbits$nbits.data"

IVFPQ_ROOT="$IVFPQ_ROOT" MODE="$mode" DATASET="$dataset" LISTS="$lists" M="$m" PROBES="$probes" RERANK="$rerank" NBITS="$nbits" DATA="$data" \
"$PYTHON" - <<'PY'
import os, subprocess, sys, time
import numpy as np
import psycopg
sys.path.insert(0, os.path.join(os.environ["IVFPQ_ROOT"], "bench"))
import datasets, pgclient

env = os.environ
ds = datasets.load(env["DATASET"])
conn = psycopg.connect(autocommit=True)
pgclient.ensure_ivfpq(conn)
dim = ds.dim


def record(pid):
    rec = subprocess.Popen(["perf", "record", "-g", "-o", env["DATA"], "-p", str(pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return rec


def make_table(name, rows, index):
    conn.execute(f"DROP TABLE IF EXISTS {name}")
    conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, embedding vector({dim}))")
    if len(rows):
        pgclient.copy_into(conn, name, np.arange(len(rows)), rows, log=lambda *a: None)
    if index:
        conn.execute(f"CREATE INDEX ON {name} USING ivfpq (embedding) WITH (lists = {env['LISTS']}, m = {env['M']}, "
                     f"nbits = {env['NBITS']})")
    conn.execute(f"VACUUM ANALYZE {name}")


pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
if env["MODE"] == "query":
    base = np.asarray(ds.base, dtype=np.float32)
    queries = np.asarray(ds.queries[:2300], dtype=np.float32)
    make_table("items", base, True)
    conn.execute(f"SET ivfpq.probes = {env['PROBES']}")
    conn.execute(f"SET ivfpq.rerank = {env['RERANK']}")
    sql = "SELECT id FROM items ORDER BY embedding <-> %s LIMIT 10"
    for q in queries[:300]:
        conn.execute(sql, (pgclient.Vector(q),), prepare=True).fetchall()
    rec = record(pid)
    t0 = time.perf_counter()
    for q in queries[300:]:
        conn.execute(sql, (pgclient.Vector(q),), prepare=True).fetchall()
    seconds = time.perf_counter() - t0
    rec.send_signal(2)
    rec.wait()
    print(f"{ds.name}: {len(queries) - 300} queries, {(len(queries) - 300) / seconds:.0f} QPS under perf "
          f"(probes {env['PROBES']}, rerank {env['RERANK']}, lists {env['LISTS']}, m {env['M']}, nbits {env['NBITS']})")
else:
    base = np.asarray(ds.base[:120000], dtype=np.float32)
    make_table("items", base[:100000], True)
    make_table("plain", base[:0], False)
    new = base[100000:120000]
    ids = np.arange(1_000_000, 1_000_000 + len(new))
    rates = {}
    for table in ("plain", "items"):
        rec = record(pid) if table == "items" else None
        t0 = time.perf_counter()
        for s in range(0, len(new), 100):
            pgclient.copy_into(conn, table, ids[s:s + 100], new[s:s + 100], log=lambda *a: None)
        rates[table] = len(new) / (time.perf_counter() - t0)
        if rec:
            rec.send_signal(2)
            rec.wait()
    print(f"{ds.name}: inserts {rates['items']:.0f} rows/s with the index (under perf), "
          f"{rates['plain']:.0f} without (lists {env['LISTS']}, m {env['M']})")
PY
perf report -i "$data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null | grep -E "^ +[0-9]" | head -25
