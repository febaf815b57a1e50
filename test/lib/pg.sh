#!/usr/bin/env bash
# test/lib/pg.sh -- shared shell helpers: install dependencies, build and
# install the extension, start/stop a throwaway Postgres cluster.
#
# Source it, then:
#   ivfpq_install_deps            apt packages (once per machine; no-op if present)
#   ivfpq_build_install           make + make install (as root)
#   ivfpq_cluster_start NAME      initdb + start a cluster under .tmp/NAME as the
#                                 postgres user on a free port; exports PGHOST,
#                                 PGPORT, PGUSER, PGDATABASE; registers a trap
#                                 that stops it, and every other cluster this
#                                 shell started, on exit (even on failure)
#   ivfpq_cluster_stop            stop the cluster started last
#   ivfpq_cluster_track DIR       have that trap stop a cluster made another way
#                                 (pg_basebackup); IVFPQ_REMOVE_CLUSTERS=1 makes it
#                                 delete the clusters' directories too
#
# Extra postgresql.conf lines can be given in IVFPQ_PG_CONF before starting.

IVFPQ_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# IVFPQ_PGBIN may name another (relocated) copy of the server for development.
IVFPQ_PGBIN="${IVFPQ_PGBIN:-/usr/lib/postgresql/15/bin}"
IVFPQ_PACKAGES="postgresql-15 postgresql-server-dev-15 postgresql-client-15 libfaiss-dev \
libopenblas-dev liblapack-dev postgresql-15-cron python3-psycopg python3-numpy python3-faiss \
python3-pytest libipc-run-perl dataset-fashion-mnist libgtest-dev cmake g++ make"
export PYTHON="/usr/bin/python3"   # Debian's python: psycopg, numpy, faiss come from apt

ivfpq_as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

ivfpq_install_deps() {
    local missing=()
    local p
    for p in $IVFPQ_PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "== installing ${missing[*]}"
        ivfpq_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        ivfpq_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

ivfpq_build_install() {
    echo "== building and installing the extension"
    ( cd "$IVFPQ_ROOT" && make -s -j2 PG_CONFIG="$IVFPQ_PGBIN/pg_config" >/dev/null \
        && ivfpq_as_root make -s install PG_CONFIG="$IVFPQ_PGBIN/pg_config" >/dev/null )
}

ivfpq_free_port() {
    local port
    for port in $(seq 54400 54499); do
        if ! (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && [ ! -e "/tmp/.s.PGSQL.$port" ]; then
            echo "$port"; return 0
        fi
    done
    return 1
}

# Run a command as the unprivileged cluster owner.
ivfpq_as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

ivfpq_cluster_start() {
    local name="${1:-cluster}"
    IVFPQ_CLUSTER_DIR="$IVFPQ_ROOT/.tmp/$name"
    mkdir -p "$IVFPQ_ROOT/.tmp"
    # The postgres user must be able to reach the directory.
    local d="$IVFPQ_ROOT"
    while [ "$d" != "/" ]; do chmod o+x "$d" 2>/dev/null || true; d="$(dirname "$d")"; done
    chmod 755 "$IVFPQ_ROOT/.tmp"
    if [ -f "$IVFPQ_CLUSTER_DIR/data/postmaster.pid" ]; then
        ivfpq_as_pg "$IVFPQ_PGBIN/pg_ctl" -D "$IVFPQ_CLUSTER_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$IVFPQ_CLUSTER_DIR"
    mkdir -p "$IVFPQ_CLUSTER_DIR"
    # Tracked before it starts, so that a failed start is cleaned up too.
    ivfpq_cluster_track "$IVFPQ_CLUSTER_DIR"
    [ "$(id -u)" = 0 ] && chown postgres: "$IVFPQ_CLUSTER_DIR"
    ivfpq_as_pg "$IVFPQ_PGBIN/initdb" -D "$IVFPQ_CLUSTER_DIR/data" -U postgres --auth=trust \
        --no-sync >"$IVFPQ_CLUSTER_DIR/initdb.log" 2>&1 || { cat "$IVFPQ_CLUSTER_DIR/initdb.log"; return 1; }
    cp "$IVFPQ_CLUSTER_DIR/data/postgresql.conf" "$IVFPQ_CLUSTER_DIR/postgresql.conf.initdb"
    # Another cluster may take the free port between the check and the start: retry.
    local attempt
    for attempt in 1 2 3 4 5; do
        PGPORT="$(ivfpq_free_port)"
        cp "$IVFPQ_CLUSTER_DIR/postgresql.conf.initdb" "$IVFPQ_CLUSTER_DIR/data/postgresql.conf"
        cat >>"$IVFPQ_CLUSTER_DIR/data/postgresql.conf" <<CONF
port = $PGPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$IVFPQ_CLUSTER_DIR'
fsync = off
shared_buffers = 512MB
maintenance_work_mem = 1GB
max_parallel_maintenance_workers = 1
${IVFPQ_PG_CONF:-}
CONF
        chown postgres: "$IVFPQ_CLUSTER_DIR/data/postgresql.conf" 2>/dev/null || true
        if ivfpq_as_pg "$IVFPQ_PGBIN/pg_ctl" -D "$IVFPQ_CLUSTER_DIR/data" -l "$IVFPQ_CLUSTER_DIR/server.log" \
            -w -t 60 start >/dev/null; then
            break
        fi
        if [ "$attempt" = 5 ] || ! grep -q "Address already in use" "$IVFPQ_CLUSTER_DIR/server.log"; then
            cat "$IVFPQ_CLUSTER_DIR/server.log"; return 1
        fi
        sleep 1
    done
    export PGHOST="$IVFPQ_CLUSTER_DIR" PGPORT PGUSER=postgres PGDATABASE=postgres
    trap ivfpq_cluster_stop_all EXIT
    echo "== cluster $name running on port $PGPORT ($IVFPQ_CLUSTER_DIR)"
}

IVFPQ_STARTED_DIRS=()

ivfpq_cluster_track() {
    IVFPQ_STARTED_DIRS+=("$1")
    trap ivfpq_cluster_stop_all EXIT
}

ivfpq_cluster_stop_all() {
    local d
    for d in "${IVFPQ_STARTED_DIRS[@]}"; do
        IVFPQ_CLUSTER_DIR="$d" ivfpq_cluster_stop
        if [ "${IVFPQ_REMOVE_CLUSTERS:-0}" = 1 ]; then rm -rf "$d"; fi
    done
    return 0
}

ivfpq_cluster_stop() {
    if [ -n "${IVFPQ_CLUSTER_DIR:-}" ] && [ -f "$IVFPQ_CLUSTER_DIR/data/postmaster.pid" ]; then
        ivfpq_as_pg "$IVFPQ_PGBIN/pg_ctl" -D "$IVFPQ_CLUSTER_DIR/data" -m fast -w stop >/dev/null 2>&1 \
            || ivfpq_as_pg "$IVFPQ_PGBIN/pg_ctl" -D "$IVFPQ_CLUSTER_DIR/data" -m immediate stop >/dev/null 2>&1 || true
        echo "== cluster stopped"
    fi
}
