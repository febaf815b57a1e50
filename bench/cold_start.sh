#!/usr/bin/env bash
# bench/cold_start.sh -- cold starts with and without huge pages (bench/cold_start.py), issue 9.
#
#   bash bench/scale.sh --sizes 10000000 --probes 64 --rerank 150,200 --keep-table   # once: keeps .tmp/scale
#   bash bench/cold_start.sh [--probes 64] [--rerank 150] [--rounds 2]
#
# Starts the cluster bench/scale.sh left in .tmp/scale (its table and index
# kept), reserves the huge pages the server needs (vm.nr_hugepages; the
# previous value is restored at the end), runs bench/cold_start.py, and stops
# the cluster, also on failure. Root only: it drops the kernel's page cache.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
pgbin="${IVFPQ_PGBIN:-/usr/lib/postgresql/15/bin}"
dir="$root/.tmp/scale"
[ "$(id -u)" = 0 ] || { echo "cold_start.sh: run as root (it drops the page cache and reserves huge pages)" >&2; exit 1; }
[ -f "$dir/data/PG_VERSION" ] || { echo "cold_start.sh: no kept cluster in $dir (bench/scale.sh --keep-table)" >&2; exit 1; }
old_huge="$(cat /proc/sys/vm/nr_hugepages)"
cleanup() {
    runuser -u postgres -- "$pgbin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    echo "$old_huge" > /proc/sys/vm/nr_hugepages
}
trap cleanup EXIT
trap 'exit 130' INT TERM
needed="$(runuser -u postgres -- "$pgbin/postgres" -D "$dir/data" -C shared_memory_size_in_huge_pages)"
# Free and defragment memory first, so that the 2 MB pages can be found.
sync
echo 3 > /proc/sys/vm/drop_caches
echo 1 > /proc/sys/vm/compact_memory
# Pages other servers hold stay theirs: reserve ours on top of them.
in_use=$(( $(awk '/^HugePages_Total/ {print $2}' /proc/meminfo) - $(awk '/^HugePages_Free/ {print $2}' /proc/meminfo) ))
echo $((in_use + needed + 16)) > /proc/sys/vm/nr_hugepages
[ "$(awk '/^HugePages_Free/ {print $2}' /proc/meminfo)" -ge "$needed" ] || { echo "cold_start.sh: could not reserve $needed huge pages" >&2; exit 1; }
runuser -u postgres -- "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
export PGHOST="$dir" PGPORT="$(sed -n 's/^port = //p' "$dir/data/postgresql.conf" | tail -1)" PGUSER=postgres PGDATABASE=postgres
export IVFPQ_COLD_START_COMMAND="bash bench/cold_start.sh $*"
/usr/bin/python3 "$here/cold_start.py" "$@"
