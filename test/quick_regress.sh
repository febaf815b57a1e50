#!/usr/bin/env bash
# test/quick_regress.sh [TEST...] -- for development: install the extension
# and run the named pg_regress tests (default: all) on a throwaway cluster,
# holding /work-wide install lock if present.  The suite is test/run.sh.
set -uo pipefail
source "$(dirname "$0")/lib/pg.sh"
cd "$IVFPQ_ROOT"
ivfpq_build_install || exit 1
ivfpq_cluster_start quick >/dev/null || exit 1
tests="${*:-$(ls sql/*.sql | grep -v 'ivfpq--' | xargs -n1 basename | sed 's/\.sql$//' | tr '\n' ' ')}"
/usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress --inputdir=. --bindir="$IVFPQ_PGBIN" \
    --load-extension=ivfpq $tests
