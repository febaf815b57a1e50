#!/usr/bin/env bash
# bench/vs_pgvector.sh -- ivfpq against pgvector's HNSW and IVFFlat
# (bench/vs_pgvector.py, issue 9 target 2) on a throwaway cluster named
# "vspgvector": same rows, same queries, settings interleaved over rounds;
# best QPS at recall@10 0.95 / 0.98 / 0.99, index size and build time ratios.
#
#   bash bench/vs_pgvector.sh [fashion-mnist|generated[:N]|siftlike[:N]] --pgvector PATH [extra vs_pgvector.py args]
#   bash bench/vs_pgvector.sh fashion-mnist --pgvector /work/pgvector --lists 256 --m 56
#   bash bench/vs_pgvector.sh siftlike:20000 --pgvector /work/pgvector --nqueries 50 --rounds 1   # smoke run
#
# Same steps as bench/run.sh (dependencies, build + install, cluster under
# .tmp/vspgvector, stopped at the end even on failure) and the same overrides
# (IVFPQ_PG_CONF, IVFPQ_SHARED_BUFFERS, IVFPQ_NO_INSTALL=1). The dataset
# defaults to fashion-mnist, so the arguments may start with options.
# --pgvector PATH is a pgvector checkout already built and installed (make &&
# make install there); the benchmark never installs it. Without it the pgvector
# side is skipped (with a message) and ivfpq is measured alone.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IVFPQ_BENCH_SCRIPT=vs_pgvector.py IVFPQ_BENCH_CLUSTER=vspgvector IVFPQ_BENCH_DATASET=fashion-mnist \
    exec bash "$here/run.sh" "$@"
