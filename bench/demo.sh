#!/usr/bin/env bash
# bench/demo.sh -- a few-minute demo of ivfpq on Fashion-MNIST.
#
#   bash bench/demo.sh        (as root or a sudoer, on Debian 12)
#
# Installs the Debian dependencies, builds and installs the extension, starts
# a throwaway cluster under .tmp/demo, loads Fashion-MNIST (60,000 x 784) and
# compares exact k-NN search with the ivfpq index, then shows the same images
# as daily partitions maintained by rotation and the background worker
# (bench/demo.py). The cluster is stopped on exit, even on failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../test/lib/pg.sh
source "$here/../test/lib/pg.sh"

export IVFPQ_PG_CONF="${IVFPQ_PG_CONF:-shared_buffers = 1GB
maintenance_work_mem = 1GB
jit = off
shared_preload_libraries = 'ivfpq'
ivfpq.worker_databases = 'postgres'
ivfpq.worker_naptime = 1}"

ivfpq_install_deps
ivfpq_build_install
ivfpq_cluster_start demo
"$PYTHON" "$here/demo.py" "$@"
