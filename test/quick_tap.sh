#!/usr/bin/env bash
# test/quick_tap.sh t/NNN_name.pl... -- for development: install the extension
# and run the named TAP tests.  The suite is test/run.sh.
set -uo pipefail
source "$(dirname "$0")/lib/pg.sh"
cd "$IVFPQ_ROOT"
ivfpq_build_install || exit 1
rm -rf .tmp/tap-quick && mkdir -p .tmp/tap-quick && chmod 777 .tmp/tap-quick
[ "$(id -u)" = 0 ] && chown postgres: .tmp/tap-quick
tests=()
for t in "$@"; do tests+=("$IVFPQ_ROOT/test/$t"); done
ivfpq_as_pg env TESTDIR="$IVFPQ_ROOT/.tmp/tap-quick" PATH="$IVFPQ_PGBIN:$PATH" \
    PG_REGRESS="/usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress" \
    prove -v -I /usr/lib/postgresql/15/lib/pgxs/src/test/perl "${tests[@]}"
