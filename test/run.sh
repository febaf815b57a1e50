#!/usr/bin/env bash
# test/run.sh -- the whole ivfpq test suite on a fresh Debian 12 machine:
# installs dependencies, builds, runs core unit tests (ctest), pg_regress and
# the integration tests (pytest, TAP) against a throwaway cluster, then prints
# one summary line "N passed, N failed".  Exit status 0 only if all passed.
set -uo pipefail
source "$(dirname "$0")/lib/pg.sh"
cd "$IVFPQ_ROOT"

passed=0
failed=0
failures=()
record() {  # record NAME PASSED FAILED
    passed=$((passed + $2)); failed=$((failed + $3))
    [ "$3" -gt 0 ] && failures+=("$1: $3 failed")
    echo "== $1: $2 passed, $3 failed"
}

ivfpq_install_deps || { echo "dependency installation failed"; echo "0 passed, 1 failed"; exit 1; }

# 1. core unit tests (no Postgres)
echo "== core unit tests (cmake + ctest)"
mkdir -p .tmp
if cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >.tmp/cmake.log 2>&1 \
    && cmake --build build -j2 >>.tmp/cmake.log 2>&1; then
    ctest --test-dir build --output-on-failure -j2 >.tmp/ctest.log 2>&1
    tail -n 3 .tmp/ctest.log
    c_total=$(grep -oE 'out of [0-9]+' .tmp/ctest.log | tail -1 | grep -oE '[0-9]+' || echo 0)
    c_failed=$(grep -oE '[0-9]+ tests failed' .tmp/ctest.log | grep -oE '^[0-9]+' || echo 0)
    record "core unit tests" $((c_total - c_failed)) "$c_failed"
    [ "$c_failed" -gt 0 ] && grep -E 'Failed|FAILED' .tmp/ctest.log | head -20
else
    tail -30 .tmp/cmake.log
    record "core build" 0 1
fi

# 2. extension build + install
if ! ivfpq_build_install; then
    record "extension build" 0 1
    echo "${passed} passed, ${failed} failed"
    exit 1
fi

# 3. pg_regress + integration tests on a throwaway cluster
# pg_cron schedules ivfpq_rotate() in test/integration/test_rotation.py; ivfpq
# is preloaded as users run it, with a small shared quantizer cache that
# test/integration/test_shared_cache.py fills past its size.
IVFPQ_SUITE_CONF="shared_preload_libraries = 'pg_cron,ivfpq'
cron.database_name = 'postgres'
cron.use_background_workers = on
ivfpq.shared_cache_mb = 32"
IVFPQ_PG_CONF="${IVFPQ_SUITE_CONF}
${IVFPQ_PG_CONF:-}" ivfpq_cluster_start suite || { record "cluster start" 0 1; echo "${passed} passed, ${failed} failed"; exit 1; }

echo "== pg_regress"
make -s installcheck PG_CONFIG="$IVFPQ_PGBIN/pg_config" >.tmp/regress.log 2>&1
grep -E '\.\.\. |tests? (passed|failed)' .tmp/regress.log | head -60
r_total=$(grep -cE '\.\.\. +(ok|FAILED)' .tmp/regress.log || true)
r_failed=$(grep -cE '\.\.\. +FAILED' .tmp/regress.log || true)
if [ "$r_total" = 0 ]; then r_failed=1; tail -20 .tmp/regress.log; fi
record "pg_regress" $((r_total - r_failed)) "$r_failed"
[ "$r_failed" -gt 0 ] && [ -f regression.diffs ] && head -80 regression.diffs

if ls test/integration/test_*.py >/dev/null 2>&1; then
    echo "== integration tests (pytest)"
    "$PYTHON" -m pytest -q -p no:cacheprovider test/integration >.tmp/pytest.log 2>&1
    tail -n 25 .tmp/pytest.log
    p_passed=$(tail -1 .tmp/pytest.log | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || echo 0)
    p_failed=$(tail -1 .tmp/pytest.log | grep -oE '[0-9]+ (failed|error)' | grep -oE '[0-9]+' | awk '{s+=$1} END {print s+0}')
    [ -z "$p_failed" ] && p_failed=0
    if [ "$p_passed" = 0 ] && [ "$p_failed" = 0 ]; then p_failed=1; fi
    record "integration (pytest)" "$p_passed" "$p_failed"
fi

if ls test/t/*.pl >/dev/null 2>&1; then
    echo "== integration tests (TAP)"
    # PostgreSQL::Test::Cluster runs initdb, so it must not run as root.
    rm -rf .tmp/tap && mkdir -p .tmp/tap && chmod 777 .tmp/tap
    [ "$(id -u)" = 0 ] && chown postgres: .tmp/tap
    ivfpq_as_pg env TESTDIR="$IVFPQ_ROOT/.tmp/tap" PATH="$IVFPQ_PGBIN:$PATH" \
        PG_REGRESS="/usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress" \
        prove -I /usr/lib/postgresql/15/lib/pgxs/src/test/perl "$IVFPQ_ROOT"/test/t/*.pl >.tmp/tap.log 2>&1
    tail -n 15 .tmp/tap.log
    t_total=$(grep -oE 'Tests=[0-9]+' .tmp/tap.log | grep -oE '[0-9]+' || echo 0)
    t_failed=$(grep -oE 'Failed [0-9]+/' .tmp/tap.log | grep -oE '[0-9]+' | awk '{s+=$1} END {print s+0}')
    [ -z "$t_failed" ] && t_failed=0
    grep -q 'Result: PASS' .tmp/tap.log || [ "$t_failed" -gt 0 ] || t_failed=1
    record "integration (TAP)" $((t_total - t_failed)) "$t_failed"
fi

ivfpq_cluster_stop
trap - EXIT

echo
for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
