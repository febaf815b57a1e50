#!/usr/bin/env bash
# bench/connections_memory.sh -- memory of 100 connections that query 30 daily
# partitions, per ivfpq.cache_mb budget, on a throwaway cluster named "mem".
#
#   bash bench/connections_memory.sh [partitions, default 30] [connections, default 100]
#
# A backend's ivfpq memory depends on the indexes' shape (lists, m, dimensions),
# not on their rows: each partition gets 2000 random 768-dimension rows and an
# index WITH (lists = 30, m = 96), the shape of bench/partitions.sh's
# partitions (about 2.4 MB of quantizer per partition).  The cluster preloads
# ivfpq with ivfpq.shared_cache_mb = 256.  Then bench/connections_memory.py
# opens connections/10 and then all the connections, runs 3 queries each over
# the parent with the shared quantizer cache, and with private caches at
# ivfpq.cache_mb 256 and 16, and reports each backend's ivfpq memory contexts
# and RssAnon, and the shared cache's use.  Results: bench/results/connections-memory-<date>.md.
# IVFPQ_NO_INSTALL=1 uses the installed extension.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../test/lib/pg.sh
source "$here/../test/lib/pg.sh"
partitions="${1:-30}"
connections="${2:-100}"

ivfpq_install_deps
[ "${IVFPQ_NO_INSTALL:-0}" = 1 ] || ivfpq_build_install
IVFPQ_PG_CONF="max_connections = $((connections + 30))
shared_buffers = 1GB
maintenance_work_mem = 1GB
shared_preload_libraries = 'ivfpq'
ivfpq.shared_cache_mb = 256" ivfpq_cluster_start mem

psql -q -c "CREATE EXTENSION IF NOT EXISTS ivfpq" -c "DROP TABLE IF EXISTS parts" \
    -c "CREATE TABLE parts (id int, ts timestamptz, embedding vector(768)) PARTITION BY RANGE (ts)"
for d in $(seq 0 $((partitions - 1))); do
    day=$(date -u -d "2024-01-01 + $d days" +%F)
    next=$(date -u -d "2024-01-01 + $((d + 1)) days" +%F)
    psql -q -c "CREATE TABLE parts_$d PARTITION OF parts FOR VALUES FROM ('$day') TO ('$next')" \
        -c "INSERT INTO parts_$d SELECT i, '$day'::timestamptz, ARRAY(SELECT random() FROM generate_series(1, 768) WHERE i > 0)::vector FROM generate_series(1, 2000) i" \
        -c "SET client_min_messages = warning" \
        -c "CREATE INDEX ON parts_$d USING ivfpq (embedding) WITH (lists = 30, m = 96)"
done
psql -q -c "ANALYZE parts"
out="$IVFPQ_ROOT/bench/results/connections-memory-$(date -u +%F).md"
{
    echo "# ivfpq memory of $connections connections over $partitions partitions"
    echo
    echo "Command: \`bash bench/connections_memory.sh $partitions $connections\` ($(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg))"
    echo
    "$PYTHON" "$here/connections_memory.py" --table parts --dataset generated:900000 \
        --connections "$(( connections / 10 > 0 ? connections / 10 : 1 )),$connections" --modes shared,private \
        --budgets 256,16 --queries 3 --set ivfpq.probes=4 --set ivfpq.rerank=10 --set enable_seqscan=off
} | tee "$out"
echo "results: $out"
