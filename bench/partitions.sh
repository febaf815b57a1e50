#!/usr/bin/env bash
# bench/partitions.sh -- daily partitions vs one table (bench/partitions_bench.py)
# on a throwaway cluster named "partitions".
#
#   bash bench/partitions.sh [generated|fashion-mnist] [extra partitions_bench.py args]
#
# Same steps as bench/run.sh (dependencies, build + install, cluster under
# .tmp/partitions, stopped at the end even on failure) and the same overrides
# (IVFPQ_PG_CONF, IVFPQ_SHARED_BUFFERS, IVFPQ_NO_INSTALL=1). Both layouts hold
# all the rows, so shared_buffers is 8GB for the generated set: enough for the
# default 30 x 30000 x 768 (2 x 2.8 GB of tables); larger runs read through
# the OS cache.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dataset="${1:-generated}"
[ $# -gt 0 ] && shift
case "$dataset" in
    generated*) export IVFPQ_SHARED_BUFFERS="${IVFPQ_SHARED_BUFFERS:-8GB}" ;;
esac
IVFPQ_BENCH_SCRIPT=partitions_bench.py IVFPQ_BENCH_CLUSTER=partitions exec bash "$here/run.sh" "$dataset" "$@"
