#!/usr/bin/env bash
# bench/run.sh -- run the ivfpq vs FAISS benchmark on a throwaway cluster.
#
#   bash bench/run.sh [fashion-mnist|generated[:N]] [extra ivfpq_bench.py args]
#
# Installs the Debian dependencies, builds and installs the extension, starts a
# cluster named "bench" under .tmp/bench with settings sized for the benchmark,
# runs bench/ivfpq_bench.py (results in bench/results/), and stops the cluster.
# Override the server settings with IVFPQ_PG_CONF (postgresql.conf lines), or
# only shared_buffers with IVFPQ_SHARED_BUFFERS. max_connections is 130 so that
# partitions_bench.py can open its 100 connections. IVFPQ_NO_INSTALL=1 skips the
# build and install and uses the extension already installed.
#
# Other benchmarks reuse this wrapper (bench/partitions.sh): IVFPQ_BENCH_SCRIPT
# names the script under bench/ (default ivfpq_bench.py), IVFPQ_BENCH_CLUSTER
# the cluster (default bench), IVFPQ_BENCH_DATASET the dataset when the
# arguments start with an option (default fashion-mnist).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../test/lib/pg.sh
source "$here/../test/lib/pg.sh"

# The dataset is the first argument unless that is an option; then the
# wrapper's IVFPQ_BENCH_DATASET, or fashion-mnist.
dataset="${IVFPQ_BENCH_DATASET:-fashion-mnist}"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    dataset="$1"
    shift
fi

# shared_buffers holds the whole table: 60k x 784 is ~60-200 MB, 1M x 768 ~4 GB.
case "$dataset" in
    generated*) shared_buffers=6GB ;;
    *) shared_buffers=2GB ;;
esac
shared_buffers="${IVFPQ_SHARED_BUFFERS:-$shared_buffers}"
export IVFPQ_PG_CONF="${IVFPQ_PG_CONF:-shared_buffers = $shared_buffers
maintenance_work_mem = 2GB
max_parallel_maintenance_workers = 1
jit = off
max_wal_size = 8GB
checkpoint_timeout = 30min
effective_cache_size = 8GB
max_connections = 130
shared_preload_libraries = 'ivfpq'}"

ivfpq_install_deps
[ "${IVFPQ_NO_INSTALL:-0}" = 1 ] || ivfpq_build_install
ivfpq_cluster_start "${IVFPQ_BENCH_CLUSTER:-bench}"
"$PYTHON" "$here/${IVFPQ_BENCH_SCRIPT:-ivfpq_bench.py}" "$dataset" "$@"
