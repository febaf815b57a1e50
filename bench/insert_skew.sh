#!/usr/bin/env bash
# bench/insert_skew.sh -- do concurrent inserts serialize on a list's tail page?
#
#   bash bench/insert_skew.sh [seconds per run, default 10]
#
# On a throwaway cluster ("skew", synchronous_commit = off so that commit
# flushes do not hide index costs), pgbench clients (1, 2, 4, 8) insert
# 20-row batches of 64-dimension vectors into:
#   one      a table with an ivfpq index (50 lists), every row landing in the
#            same list (all clients append to one tail page: the hot spot)
#   uniform  the same table, rows spread over all 50 lists
#   noindex  a table without a vector index
# Runs alternate (one, uniform, noindex) for each client count, twice.  If the
# tail page serialized inserts, "one" would stop scaling with clients while
# "uniform" went on.  Figures go to stdout and bench/results/insert-skew-<date>.md.
# IVFPQ_NO_INSTALL=1 uses the installed extension.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../test/lib/pg.sh
source "$here/../test/lib/pg.sh"
seconds="${1:-10}"
dim=64

ivfpq_install_deps
[ "${IVFPQ_NO_INSTALL:-0}" = 1 ] || ivfpq_build_install
IVFPQ_PG_CONF="autovacuum = off
synchronous_commit = off
shared_buffers = 1GB" ivfpq_cluster_start skew

psql -q -c "CREATE EXTENSION IF NOT EXISTS ivfpq" \
    -c "DROP TABLE IF EXISTS skew_t, skew_n" \
    -c "CREATE TABLE skew_t (id bigserial, e vector($dim))" \
    -c "INSERT INTO skew_t (e) SELECT ARRAY(SELECT (i % 50) + random() FROM generate_series(1, $dim))::vector FROM generate_series(1, 20000) i" \
    -c "CREATE TABLE skew_n (id bigserial, e vector($dim))" \
    -c "CREATE INDEX ON skew_t USING ivfpq (e) WITH (lists = 50, m = 8)"
scripts="$IVFPQ_ROOT/.tmp/skew"
mkdir -p "$scripts"
echo "INSERT INTO skew_t (e) SELECT ARRAY(SELECT 7 + random() * 0.1 FROM generate_series(1, $dim))::vector FROM generate_series(1, 20);" >"$scripts/one.sql"
echo "INSERT INTO skew_t (e) SELECT ARRAY(SELECT (i % 50) + random() FROM generate_series(1, $dim))::vector FROM generate_series(1, 20) i;" >"$scripts/uniform.sql"
echo "INSERT INTO skew_n (e) SELECT ARRAY(SELECT 7 + random() * 0.1 FROM generate_series(1, $dim))::vector FROM generate_series(1, 20);" >"$scripts/noindex.sql"

declare -A sum
out="$IVFPQ_ROOT/bench/results/insert-skew-$(date -u +%F).md"
{
    echo "# Concurrent inserts: one hot list vs spread lists vs no index"
    echo
    echo "Command: \`bash bench/insert_skew.sh $seconds\` ($(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
    echo
    echo "| round | clients | one list (rows/s) | uniform (rows/s) | no index (rows/s) |"
    echo "|---|---|---|---|---|"
} >"$out"
for round in 1 2; do
    for c in 1 2 4 8; do
        row="| $round | $c |"
        for s in one uniform noindex; do
            tps=$(pgbench -n -T "$seconds" -c "$c" -j "$c" -f "$scripts/$s.sql" 2>/dev/null \
                | grep -oE 'tps = [0-9.]+' | head -1 | grep -oE '[0-9.]+$')
            rows=$(awk -v t="$tps" 'BEGIN { printf "%.0f", t * 20 }')
            sum[$s,$c]=$(( ${sum[$s,$c]:-0} + rows ))
            row="$row $rows |"
        done
        echo "$row" | tee -a "$out"
    done
done
{
    echo
    echo "Mean of both rounds, and the ratios that matter:"
    echo
    echo "| clients | one list | uniform | no index | one / uniform | uniform / no index |"
    echo "|---|---|---|---|---|---|"
    for c in 1 2 4 8; do
        awk -v c="$c" -v o="${sum[one,$c]}" -v u="${sum[uniform,$c]}" -v n="${sum[noindex,$c]}" \
            'BEGIN { printf "| %d | %.0f | %.0f | %.0f | %.2f | %.2f |\n", c, o/2, u/2, n/2, o/u, u/n }'
    done
} | tee -a "$out"
echo "results: $out"
