#!/usr/bin/env bash
# bench/scale.sh -- ivfpq at growing sizes of generated 768-dimensional rows
# (bench/scale_bench.py): build time, peak memory, index size, latency at
# recall@10 >= 0.95 with a cold and a warm heap, and the growth curve (issue 9).
#
#   bash bench/scale.sh                                     # 1M, 3M, 10M rows (hours)
#   bash bench/scale.sh --drop-caches                       # cold runs also without the page cache
#   bash bench/scale.sh --sizes 200000,500000 --queries 50  # smoke run
#
# Same steps as bench/run.sh (dependencies, build + install, cluster under
# .tmp/scale, stopped at the end even on failure) and the same overrides
# (IVFPQ_PG_CONF, IVFPQ_SHARED_BUFFERS, IVFPQ_NO_INSTALL=1). 10M rows need
# about 40 GB of free disk for the table.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IVFPQ_BENCH_SCRIPT=scale_bench.py IVFPQ_BENCH_CLUSTER=scale IVFPQ_BENCH_DATASET=generated \
    exec bash "$here/run.sh" "$@"
