#!/usr/bin/env bash
# bench/clients.sh -- query throughput with 1, 2 and 8 clients by pgbench
# (bench/clients_bench.py, issue 9 target 4): the shared quantizer cache
# against private caches, on a throwaway cluster named "clients" that
# preloads ivfpq.
#
#   bash bench/clients.sh [fashion-mnist|generated[:N]|siftlike[:N]] [clients_bench.py args]
#   bash bench/clients.sh fashion-mnist --seconds 3 --rounds 1    # smoke run
#
# Same steps as bench/run.sh (dependencies, build + install, cluster under
# .tmp/clients, stopped at the end even on failure) and the same overrides
# (IVFPQ_PG_CONF, IVFPQ_SHARED_BUFFERS, IVFPQ_NO_INSTALL=1).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IVFPQ_BENCH_SCRIPT=clients_bench.py IVFPQ_BENCH_CLUSTER=clients IVFPQ_BENCH_DATASET=fashion-mnist \
    exec bash "$here/run.sh" "$@"
