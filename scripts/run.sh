#!/usr/bin/env bash
# scripts/run.sh — build and run pgward. With no --upstream/--config (or PGWARD_CONFIG) it uses
# the PostgreSQL on 127.0.0.1:5432 when one answers there, and otherwise starts a throwaway
# local PostgreSQL (system packages; installed with apt-get when missing and running as root),
# which is stopped and removed on exit. Extra arguments go to pgward.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=../bench/lib.sh
source bench/lib.sh

cargo build --release --quiet
PGWARD=target/release/pgward
args=("$@")

configured=0
for a in "$@"; do
    case "$a" in --upstream | --upstream=* | --config | --config=* | -c) configured=1 ;; esac
done
[[ -n "${PGWARD_CONFIG:-}" ]] && configured=1

if ((configured == 0)); then
    if (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
        log "using the PostgreSQL on 127.0.0.1:5432"
        args+=(--upstream 127.0.0.1:5432)
    else
        if ! pg_bin_dir >/dev/null; then
            ((EUID == 0)) || die "no PostgreSQL server binaries: install the Debian package 'postgresql'"
            ensure_pkg initdb postgresql
        fi
        demo_dir="$(mktemp -d "${TMPDIR:-/tmp}/pgward-demo.XXXXXX")"
        port="$(free_port)"
        log "no PostgreSQL on 127.0.0.1:5432: starting a throwaway one on port $port (removed on exit)"
        pg_start "$demo_dir" "$port"
        on_exit "rm -rf '$demo_dir'"
        args+=(--upstream "127.0.0.1:$port")
    fi
fi

log "pgward on 127.0.0.1:6432 (admin http://127.0.0.1:6480); Ctrl-C stops"
log "try: psql \"host=127.0.0.1 port=6432 user=postgres dbname=postgres\""
run_killable "$PGWARD" "${args[@]}"
