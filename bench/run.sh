#!/usr/bin/env bash
# bench/run.sh -- run the ivfpq vs FAISS benchmark on a throwaway cluster.
#
#   bash bench/run.sh [fashion-mnist|generated[:N]] [extra ivfpq_bench.py args]
#
# Installs the Debian dependencies, builds and installs the extension, starts a
# cluster named "bench" under .tmp/bench with settings sized for the benchmark,
# runs bench/ivfpq_bench.py (results in bench/results/), and stops the cluster.
# Override the server settings with IVFPQ_PG_CONF (postgresql.conf lines).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../test/lib/pg.sh
source "$here/../test/lib/pg.sh"

dataset="${1:-fashion-mnist}"
[ $# -gt 0 ] && shift

# shared_buffers holds the whole table: 60k x 784 is ~60-200 MB, 1M x 768 ~4 GB.
case "$dataset" in
    generated*) shared_buffers=6GB ;;
    *) shared_buffers=2GB ;;
esac
export IVFPQ_PG_CONF="${IVFPQ_PG_CONF:-shared_buffers = $shared_buffers
maintenance_work_mem = 2GB
max_parallel_maintenance_workers = 1
jit = off
max_wal_size = 8GB
checkpoint_timeout = 30min
effective_cache_size = 8GB}"

ivfpq_install_deps
ivfpq_build_install
ivfpq_cluster_start bench
"$PYTHON" "$here/ivfpq_bench.py" "$dataset" "$@"
