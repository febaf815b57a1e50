#!/usr/bin/env bash
# bench/churn.sh -- live data under churn (bench/churn_bench.py) on a throwaway
# cluster named "churn": insert throughput with and without a vector index,
# VACUUM after deleting 20% of the rows, searches under inserts.
#
#   bash bench/churn.sh [generated] [extra churn_bench.py args]
#   bash bench/churn.sh --rows 20000 --vacuum-rows 20000 --seconds 5      # smoke run
#
# Same steps as bench/run.sh (dependencies, build + install, cluster under
# .tmp/churn, stopped at the end even on failure) and the same overrides
# (IVFPQ_PG_CONF, IVFPQ_SHARED_BUFFERS, IVFPQ_NO_INSTALL=1). Only the generated
# set is supported; it is the default, so the arguments may start with options.
# --pgvector PATH adds pgvector's ivfflat and hnsw to the insert part; PATH is a
# pgvector checkout already built and installed (make && make install there).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IVFPQ_BENCH_SCRIPT=churn_bench.py IVFPQ_BENCH_CLUSTER=churn IVFPQ_BENCH_DATASET=generated \
    exec bash "$here/run.sh" "$@"
