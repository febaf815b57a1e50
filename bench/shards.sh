#!/usr/bin/env bash
# bench/shards.sh -- one server against a coordinator + 2 postgres_fdw shards
# (bench/shards_bench.py), issue 10.
#
#   bash bench/shards.sh [generated|siftlike] [--rows N] [extra shards_bench.py args]
#
# Starts three throwaway clusters one after another with test/lib/pg.sh:
# .tmp/shard1, .tmp/shard2 and .tmp/coord (the coordinator, which also holds
# the one-server table items_all with its own index), each preloading ivfpq.
# All three are stopped at the end, also on failure or Ctrl-C (pg.sh's trap
# stops every cluster the script started).
# IVFPQ_NO_INSTALL=1 skips the build and install and uses the installed extension;
# IVFPQ_PGBIN names another server copy (test/lib/pg.sh); IVFPQ_COORD_SHARED_BUFFERS,
# IVFPQ_SHARD_SHARED_BUFFERS and IVFPQ_MAX_WAL_SIZE (a smaller one bounds the
# disk the WAL takes while loading 1M rows) change the servers' settings;
# IVFPQ_REMOVE_CLUSTERS=1 deletes the three clusters' directories at the end.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../test/lib/pg.sh
source "$here/../test/lib/pg.sh"

dataset="generated"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    dataset="$1"
    shift
fi

trap 'exit 130' INT TERM

conf_for() {
    # shared_buffers holds each server's table: 200k x 768 is ~780 MB on one server.
    echo "shared_buffers = $1
maintenance_work_mem = 1GB
max_parallel_maintenance_workers = 1
jit = off
max_wal_size = ${IVFPQ_MAX_WAL_SIZE:-8GB}
checkpoint_timeout = 30min
shared_preload_libraries = 'ivfpq'"
}

ivfpq_install_deps
[ "${IVFPQ_NO_INSTALL:-0}" = 1 ] || ivfpq_build_install

ports=()
hosts=()
for name in shard1 shard2 coord; do
    if [ "$name" = coord ]; then sb="${IVFPQ_COORD_SHARED_BUFFERS:-2GB}"; else sb="${IVFPQ_SHARD_SHARED_BUFFERS:-1GB}"; fi
    IVFPQ_PG_CONF="$(conf_for "$sb")" ivfpq_cluster_start "$name"
        ports+=("$PGPORT")
    hosts+=("$PGHOST")
done

# The exact command for the results, with the environment that changed the run.
wrapper_env=""
for v in IVFPQ_PGBIN IVFPQ_NO_INSTALL IVFPQ_COORD_SHARED_BUFFERS IVFPQ_SHARD_SHARED_BUFFERS IVFPQ_MAX_WAL_SIZE IVFPQ_REMOVE_CLUSTERS; do
    [ -n "${!v:-}" ] && wrapper_env+="$v=${!v} "
done
export IVFPQ_BENCH_WRAPPER="${wrapper_env}bash bench/shards.sh $dataset${*:+ $*}"
"$PYTHON" "$here/shards_bench.py" "$dataset" \
    --coord "host=${hosts[2]} port=${ports[2]} user=postgres dbname=postgres" \
    --shard "host=${hosts[0]} port=${ports[0]} user=postgres dbname=postgres" \
    --shard "host=${hosts[1]} port=${ports[1]} user=postgres dbname=postgres" \
    "$@"
