#!/usr/bin/env bash
# bench/replicas.sh -- read scaling with a primary and two streaming hot
# standbys under a write load (bench/replicas_bench.py), issue 10.
#
#   bash bench/replicas.sh [generated|siftlike] [--rows N] [extra replicas_bench.py args]
#
# Starts the primary (.tmp/primary) with test/lib/pg.sh, loads the rows and
# builds the index there (replicas_bench.py --phase load), then makes
# .tmp/standby1 and .tmp/standby2 with pg_basebackup -R -X stream over
# 127.0.0.1 and starts them as hot standbys (hot_standby_feedback on,
# cluster_name = their name, which pg_stat_replication shows as
# application_name), and measures (--phase measure).  All three are stopped at
# the end, also on failure or Ctrl-C.
# IVFPQ_NO_INSTALL=1 skips the build and install and uses the installed
# extension; IVFPQ_PGBIN names another server copy (test/lib/pg.sh);
# IVFPQ_SHARED_BUFFERS sets each server's shared_buffers (default 1GB);
# IVFPQ_REMOVE_CLUSTERS=1 deletes the three clusters' directories at the end.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../test/lib/pg.sh
source "$here/../test/lib/pg.sh"

dataset="generated"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    dataset="$1"
    shift
fi

trap 'exit 130' INT TERM

ivfpq_install_deps
[ "${IVFPQ_NO_INSTALL:-0}" = 1 ] || ivfpq_build_install

IVFPQ_PG_CONF="shared_buffers = ${IVFPQ_SHARED_BUFFERS:-1GB}
jit = off
max_wal_size = 2GB
checkpoint_timeout = 30min
wal_keep_size = 1GB
shared_preload_libraries = 'ivfpq'" ivfpq_cluster_start primary
primary_port="$PGPORT"
primary_host="$PGHOST"
primary="host=$primary_host port=$primary_port user=postgres dbname=postgres"
state="$IVFPQ_ROOT/.tmp/replicas-state.json"
rm -f "$state"
touch "$state"

"$PYTHON" "$here/replicas_bench.py" "$dataset" --phase load --primary "$primary" --state "$state" "$@"

standby_dsns=()
for name in standby1 standby2; do
    dir="$IVFPQ_ROOT/.tmp/$name"
    [ -f "$dir/data/postmaster.pid" ] && ivfpq_as_pg "$IVFPQ_PGBIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    mkdir -p "$dir"
    chown postgres: "$dir" 2>/dev/null || true
    ivfpq_cluster_track "$dir"
    echo "== pg_basebackup -R for $name"
    ivfpq_as_pg "$IVFPQ_PGBIN/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U postgres -D "$dir/data" \
        -R -X stream -c fast
    port="$(ivfpq_free_port)"
    # The primary's postgresql.conf came with the backup; the last setting wins.
    cat >>"$dir/data/postgresql.conf" <<CONF
port = $port
unix_socket_directories = '$dir'
cluster_name = '$name'
hot_standby = on
hot_standby_feedback = on
CONF
    ivfpq_as_pg "$IVFPQ_PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 120 start >/dev/null \
        || { cat "$dir/server.log"; exit 1; }
    echo "== standby $name running on port $port ($dir)"
    standby_dsns+=(--standby "host=$dir port=$port user=postgres dbname=postgres")
done

# The exact command for the results, with the environment that changed the run.
wrapper_env=""
for v in IVFPQ_PGBIN IVFPQ_NO_INSTALL IVFPQ_SHARED_BUFFERS IVFPQ_REMOVE_CLUSTERS; do
    [ -n "${!v:-}" ] && wrapper_env+="$v=${!v} "
done
export IVFPQ_BENCH_WRAPPER="${wrapper_env}bash bench/replicas.sh $dataset${*:+ $*}"
"$PYTHON" "$here/replicas_bench.py" "$dataset" --phase measure --primary "$primary" "${standby_dsns[@]}" \
    --state "$state" "$@"
