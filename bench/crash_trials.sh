#!/usr/bin/env bash
# bench/crash_trials.sh -- the crash-recovery trials of test/t/005_crash.pl at
# benchmark size: kill -9 of the postmaster during concurrent inserts and
# deletes, during VACUUM (while it frees index pages), and during CREATE INDEX
# [CONCURRENTLY], N trials each (default 10), every restart checked against a
# ledger of what committed (all-lists search, ivfpq_verify with heapallindexed).
#
#   bash bench/crash_trials.sh [trials per situation, default 10]
#
# Writes bench/results/crash-trials-<date>.md.  IVFPQ_NO_INSTALL=1 uses the
# installed extension.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../test/lib/pg.sh
source "$here/../test/lib/pg.sh"
trials="${1:-10}"

ivfpq_install_deps
[ "${IVFPQ_NO_INSTALL:-0}" = 1 ] || ivfpq_build_install
dir="$IVFPQ_ROOT/.tmp/crash-trials"
rm -rf "$dir" && mkdir -p "$dir" && chmod 777 "$dir"
[ "$(id -u)" = 0 ] && chown postgres: "$dir"
start=$(date +%s)
set +e
ivfpq_as_pg env TESTDIR="$dir" PATH="$IVFPQ_PGBIN:$PATH" IVFPQ_CRASH_TRIALS="$trials" \
    PG_REGRESS="/usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress" \
    prove -I /usr/lib/postgresql/15/lib/pgxs/src/test/perl "$IVFPQ_ROOT/test/t/005_crash.pl" >"$dir/prove.log" 2>&1
status=$?
set -e
seconds=$(( $(date +%s) - start ))
log="$dir/tmp_check/log/regress_log_005_crash"
ok=$(grep -cE '^\[[0-9:.]+\]\([0-9.]+s\) ok ' "$log" || true)
notok=$(grep -cE '^\[[0-9:.]+\]\([0-9.]+s\) not ok ' "$log" || true)
restarts=$(grep -cE 'the restart ran crash recovery' "$log" || true)
out="$IVFPQ_ROOT/bench/results/crash-trials-$(date -u +%F).md"
{
    echo "# Crash trials: kill -9 of the postmaster, $trials trials per situation"
    echo
    echo "Command: \`bash bench/crash_trials.sh $trials\` ($(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
    echo
    echo "- crashes with recovery checked: $restarts"
    echo "- checks passed: $ok, failed: $notok (prove exit status $status), $seconds s"
    echo
    echo "Per trial (from the test's log):"
    echo
    echo '```'
    grep -E 'ok [0-9]+ - .*(restart ran crash recovery|ivfpq_verify reports no problem|exactly once)' "$log" \
        | sed -E 's/^\[[0-9:.]+\]\([0-9.]+s\) //' | head -400
    echo '```'
    echo
    echo "prove:"
    echo
    echo '```'
    tail -5 "$dir/prove.log"
    echo '```'
} >"$out"
tail -5 "$dir/prove.log"
echo "crashes $restarts, checks passed $ok, failed $notok; results: $out"
exit "$status"
