# shellcheck shell=bash
# bench/lib.sh — helpers sourced by the bench/*.sh scripts.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Provides:
#   pg_bin_dir                      directory holding initdb/pg_ctl/postgres
#   as_postgres CMD...              run CMD as OS user postgres when we are root
#   pg_start DIR PORT [-c k=v ...]  throwaway cluster in DIR (data in DIR/data,
#                                   unix socket in DIR, log in DIR/postgres.log)
#   pg_stop DIR                     stop that cluster
#   ensure_pkg CMD DEBPKG           apt-get install DEBPKG when CMD is missing
#   ensure_pg_server                PostgreSQL server binaries, installing the Debian
#                                   package postgresql when missing (root + apt-get)
#   free_port                       print a free TCP port on 127.0.0.1
#   wait_port PORT [SECS] [PID]     wait until 127.0.0.1:PORT accepts connections
#   proc_cpu_us PID                 utime+stime of PID (all threads) in µs
#   bg_start [--as-postgres] LOG CMD...
#                                   start CMD in background, log to LOG, register
#                                   it for cleanup; its pid ends up in $BG_PID
#   register_pid PID                kill PID at exit
#   run_killable CMD...             run CMD so that INT/TERM interrupt it at once
#   on_exit 'shell code'            run code at exit (after processes/clusters are stopped)
#   make_workdir PREFIX             a temp folder in $WORK (mode 755), removed at exit once the
#                                   script set _bench_ok=1; kept (and named) on failure or
#                                   with KEEP_WORKDIR=1
#   cargo_target_dir                cargo's target folder for this repository
#                                   ($CARGO_TARGET_DIR, else target/)
#   build_pgload                    set PGLOAD to the load generator (examples/pgload.rs):
#                                   $PGLOAD_BIN when set, else built with
#                                   `cargo build --release --example pgload`; exports
#                                   PGLOAD_BIN so scripts it starts reuse that binary
#
# On EXIT, INT, TERM and HUP every registered process is killed (TERM, then
# KILL after a grace period) and every cluster started by pg_start is stopped.
# Set BENCH_DEBUG=1 to see what the cleanup does.

if [[ -n "${_BENCH_LIB_LOADED:-}" ]]; then
    return 0
fi
_BENCH_LIB_LOADED=1

_BENCH_PIDS=()
_BENCH_PG_DIRS=()
_BENCH_HOOKS=()
_BENCH_STATE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/bench-lib.XXXXXX")"
_BENCH_CLEANED=0
_BENCH_APT_UPDATED=0

# log/die write to the script's original stderr, so that messages from traps
# that fire inside a redirected command (e.g. run_killable ... >file) are seen
exec {_BENCH_STDERR}>&2
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&"$_BENCH_STDERR"; }
die() { log "ERROR: $*"; exit 1; }
_bench_debug() { [[ -n "${BENCH_DEBUG:-}" ]] && log "cleanup: $*"; return 0; }

register_pid() { _BENCH_PIDS+=("$1"); }

make_workdir() {
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")"
    chmod 755 "$WORK"
    _bench_ok=0
    on_exit _bench_workdir_cleanup
}
_bench_workdir_cleanup() {
    if [[ "${KEEP_WORKDIR:-}" == 1 || "${_bench_ok:-0}" != 1 ]]; then
        log "work folder kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
_BENCH_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cargo_target_dir() {
    local d="${CARGO_TARGET_DIR:-target}"
    [[ "$d" == /* ]] || d="$_BENCH_REPO/$d"
    printf '%s\n' "$d"
}
PGLOAD=""
build_pgload() {
    if [[ -n "${PGLOAD_BIN:-}" ]]; then
        [[ -x "$PGLOAD_BIN" ]] || die "PGLOAD_BIN=$PGLOAD_BIN is not executable"
        PGLOAD="$PGLOAD_BIN"
        return 0
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found: it builds the load generator (examples/pgload.rs)"
    log "cargo build --release --example pgload"
    (cd "$_BENCH_REPO" && cargo build --release --example pgload >&2) \
        || die "cargo build --release --example pgload failed"
    PGLOAD="$(cargo_target_dir)/release/examples/pgload"
    [[ -x "$PGLOAD" ]] || die "$PGLOAD missing after cargo build --release --example pgload"
    export PGLOAD_BIN="$PGLOAD"
}

_BENCH_FG_PID=""
on_exit() { _BENCH_HOOKS+=("$1"); }

_bench_cleanup() {
    local rc=$?
    ((_BENCH_CLEANED)) && return "$rc"
    _BENCH_CLEANED=1
    set +e
    trap - ERR # a script's ERR trap must not fire on the expected failures below
    trap '' INT TERM HUP # do not get interrupted half way through cleaning up
    local hook pid dir i
    # a command started by run_killable that is still running
    if [[ -n "$_BENCH_FG_PID" ]] && kill -0 "$_BENCH_FG_PID" 2>/dev/null; then
        _bench_debug "TERM foreground $_BENCH_FG_PID"
        kill -TERM "$_BENCH_FG_PID" 2>/dev/null
        wait "$_BENCH_FG_PID" 2>/dev/null
    fi
    # processes: TERM, wait up to 5s, then KILL
    local alive=()
    for pid in "${_BENCH_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            _bench_debug "TERM $pid"
            kill -TERM "$pid" 2>/dev/null
            alive+=("$pid")
        fi
    done
    for ((i = 0; i < 50 && ${#alive[@]} > 0; i++)); do
        local still=()
        for pid in "${alive[@]}"; do
            kill -0 "$pid" 2>/dev/null && still+=("$pid")
        done
        alive=("${still[@]}")
        ((${#alive[@]} > 0)) && sleep 0.1
    done
    for pid in "${alive[@]}"; do
        _bench_debug "KILL $pid"
        kill -KILL "$pid" 2>/dev/null
    done
    # reap our own children quietly
    for pid in "${_BENCH_PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    for dir in "${_BENCH_PG_DIRS[@]}"; do
        _bench_debug "pg_stop $dir"
        pg_stop "$dir" >/dev/null 2>&1
    done
    # hooks last: they may remove directories the processes above were using
    for hook in "${_BENCH_HOOKS[@]}"; do
        _bench_debug "hook: $hook"
        eval "$hook"
    done
    rm -rf "$_BENCH_STATE_DIR"
    return "$rc"
}

trap _bench_cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM
trap 'exit 129' HUP

# Directory holding the PostgreSQL server binaries (initdb, pg_ctl, postgres).
# Honors PG_BIN; otherwise PATH, then the newest /usr/lib/postgresql/*/bin.
pg_bin_dir() {
    if [[ -n "${PG_BIN:-}" ]]; then
        printf '%s\n' "$PG_BIN"
        return 0
    fi
    local p
    if p="$(command -v initdb 2>/dev/null)"; then
        dirname "$p"
        return 0
    fi
    local d v best="" bestv=-1
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/initdb" ]] || continue
        v="${d#/usr/lib/postgresql/}"
        v="${v%%/*}"
        v="${v%%.*}"
        [[ "$v" =~ ^[0-9]+$ ]] || v=0
        if ((v > bestv)); then
            best="$d"
            bestv="$v"
        fi
    done
    [[ -n "$best" ]] || return 1
    printf '%s\n' "$best"
}

# Run a command as OS user postgres when we are root (initdb, pg_ctl and
# pgbouncer all refuse to run as root); run it as is otherwise.
as_postgres() {
    if ((EUID == 0)); then
        # cd / so the tools do not trip over an unreadable cwd (e.g. /root);
                (cd / && exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$@" {_BENCH_STDERR}>&-)
    else
        "$@"
    fi
}

# ensure_pkg CMD DEBPKG — install Debian package DEBPKG when CMD is not found.
ensure_pkg() {
    local cmd="$1" pkg="$2"
    command -v "$cmd" >/dev/null 2>&1 && return 0
    ((EUID == 0)) || die "'$cmd' not found and not root: install Debian package '$pkg'"
    command -v apt-get >/dev/null 2>&1 || die "'$cmd' not found and no apt-get to install '$pkg'"
    log "installing $pkg (for $cmd)"
    if ((!_BENCH_APT_UPDATED)); then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
        _BENCH_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >&2 \
        || die "apt-get install $pkg failed"
    hash -r
    command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' still missing after installing $pkg"
}

# ensure_pg_server — make pg_bin_dir succeed: apt-get install postgresql when
# the server binaries are missing and we can (root, apt-get); otherwise die
# naming the package.
ensure_pg_server() {
    pg_bin_dir >/dev/null 2>&1 && return 0
    if ((EUID == 0)) && command -v apt-get >/dev/null 2>&1; then
        log "no PostgreSQL server binaries (initdb): installing the Debian package 'postgresql'"
        if ((!_BENCH_APT_UPDATED)); then
            DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
            _BENCH_APT_UPDATED=1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2 \
            || die "apt-get install postgresql failed"
        hash -r
    fi
    pg_bin_dir >/dev/null 2>&1 \
        || die "no PostgreSQL server binaries (initdb, pg_ctl): install the Debian package 'postgresql' (apt-get install postgresql)"
}

_port_in_use() {
    local port="$1"
    if command -v ss >/dev/null 2>&1; then
        [[ -n "$(ss -Htan "( sport = :$port )" 2>/dev/null)" ]] && return 0
    fi
    # fallback (and double check): something accepting connections there?
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    return 1
}

# free_port — print a TCP port that nothing listens on and that this script
# has not handed out before (5432 and 6432 are never returned).
free_port() {
    local reserved="$_BENCH_STATE_DIR/ports" port i
    touch "$reserved"
    for ((i = 0; i < 200; i++)); do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        ((port == 5432 || port == 6432)) && continue
        grep -qx "$port" "$reserved" && continue
        _port_in_use "$port" && continue
        echo "$port" >>"$reserved"
        echo "$port"
        return 0
    done
    die "free_port: no free port found"
}

# wait_port PORT [TIMEOUT_SECS] [PID] — wait until 127.0.0.1:PORT accepts a
# TCP connection; fail early if PID (when given) dies.
wait_port() {
    local port="$1" timeout="${2:-30}" pid="${3:-}" i
    for ((i = 0; i < timeout * 10; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            log "process $pid died before listening on port $port"
            return 1
        fi
        sleep 0.1
    done
    log "timed out after ${timeout}s waiting for port $port"
    return 1
}

# proc_cpu_us PID — user+system CPU time of PID (summed over all its threads)
# in microseconds, from /proc/PID/stat.
proc_cpu_us() {
    local pid="$1" stat rest
    stat="$(<"/proc/$pid/stat")" || return 1
    # field 2 (comm) may contain spaces and parens: cut after the last ')'
    rest="${stat##*) }"
    local -a f
    read -r -a f <<<"$rest"
    # rest starts at field 3 (state): utime = field 14, stime = field 15
    local ticks=$((f[11] + f[12]))
    local hz
    hz="${_BENCH_CLK_TCK:-$(getconf CLK_TCK)}"
    _BENCH_CLK_TCK="$hz"
    echo $((ticks * 1000000 / hz))
}

# bg_start [--as-postgres] LOG CMD... — start the external program CMD in
# the background with stdout+stderr appended to LOG and register it for
# cleanup. Sets BG_PID to the program's own pid (exec, no wrapper shell), so
# proc_cpu_us "$BG_PID" measures the program itself. With --as-postgres (and
# when root) it runs as OS user postgres from cwd /.
# Do not call it inside $(...): BG_PID and the registration would be lost.
BG_PID=""
bg_start() {
    local as_pg=0
    if [[ "$1" == --as-postgres ]]; then
        as_pg=1
        shift
    fi
    local logf="$1"
    shift
    if ((as_pg && EUID == 0)); then
        (cd / && exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$@") \
            </dev/null >>"$logf" 2>&1 {_BENCH_STDERR}>&- &
    else
        "$@" </dev/null >>"$logf" 2>&1 {_BENCH_STDERR}>&- &
    fi
    BG_PID=$!
    register_pid "$BG_PID"
}

# run_killable CMD... — run CMD and wait for it, returning its exit status.
# Unlike a plain foreground command, a TERM/INT to the script takes effect at
# once (bash runs traps only between foreground commands) and the cleanup kills
# CMD. Redirections on the call apply to CMD as usual.
run_killable() {
    "$@" &
    _BENCH_FG_PID=$!
    local rc=0
    wait "$_BENCH_FG_PID" || rc=$?
    _BENCH_FG_PID=""
    return "$rc"
}

# pg_start DIR PORT [-c name=value ...] — throwaway cluster.
# Data directory DIR/data, unix socket in DIR, server log DIR/postgres.log.
# Trust auth, fsync off, max_connections 300, shared_buffers 256MB,
# listening on 127.0.0.1 only. Extra arguments go to postgres (e.g. -c x=y).
pg_start() {
    local dir="$1" port="$2"
    shift 2
    local bin
    bin="$(pg_bin_dir)" || die "no PostgreSQL server binaries found (initdb); install 'postgresql'"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    if ((EUID == 0)); then
        chown postgres:postgres "$dir"
        # postgres must be able to reach DIR (mktemp dirs are 0700)
        local p="$dir"
        while [[ "$p" != "/" ]]; do
            p="$(dirname "$p")"
            [[ "$(stat -c %U "$p")" == root ]] && chmod o+x "$p" 2>/dev/null
        done
    fi
    local data="$dir/data"
    if [[ ! -f "$data/PG_VERSION" ]]; then
        as_postgres "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
            >"$dir/initdb.log" 2>&1 \
            || as_postgres "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-locale \
                >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; die "initdb failed in $data"; }
        cat >"$data/pg_hba.conf" <<EOF
# written by bench/lib.sh pg_start
local all all               trust
host  all all 127.0.0.1/32  trust
host  all all ::1/128       trust
EOF
        cat >>"$data/postgresql.conf" <<EOF

# --- bench/lib.sh pg_start ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 300
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
EOF
        chown postgres:postgres "$data/pg_hba.conf" "$data/postgresql.conf" 2>/dev/null || true
    fi
    # extra settings: "-c name=value" pairs, or bare "name=value" words
    local opts="-p $port" a prev=""
    for a in "$@"; do
        if [[ "$prev" != -c && "$a" != -* && "$a" == *=* ]]; then
            opts+=" -c $(printf '%q' "$a")"
        else
            opts+=" $(printf '%q' "$a")"
        fi
        prev="$a"
    done
    _BENCH_PG_DIRS+=("$dir")
    as_postgres "$bin/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 -o "$opts" start </dev/null >/dev/null \
        || { tail -n 30 "$dir/postgres.log" >&2; die "postgres failed to start in $dir"; }
}

# pg_stop DIR — stop a cluster started by pg_start (fast, then immediate).
pg_stop() {
    local dir="$1" bin
    local data="$dir/data"
    [[ -f "$data/postmaster.pid" ]] || return 0
    bin="$(pg_bin_dir)" || return 1
    as_postgres "$bin/pg_ctl" -D "$data" -w -t 20 -m fast stop >/dev/null 2>&1 \
        || as_postgres "$bin/pg_ctl" -D "$data" -w -t 10 -m immediate stop >/dev/null 2>&1 \
        || {
            local pid
            pid="$(head -n 1 "$data/postmaster.pid" 2>/dev/null)"
            [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null
        }
    return 0
}
