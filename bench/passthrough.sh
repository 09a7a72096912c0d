#!/usr/bin/env bash
# bench/passthrough.sh — pass-through overhead of pgward vs. direct Postgres
# vs. PgBouncer (session mode), measured with `pgbench -S -n`, and the memory
# each connected client costs pgward and PgBouncer. `bench/run.sh passthrough`
# runs it with the durations of the full benchmark.
#
# Usage: bench/passthrough.sh [--smoke] [--label NAME]
#
#   --smoke        -T 2 per cell, one round and only -c 1,16 (quick sanity run)
#   --label NAME   tag stored in the CSV and printed with the table
#
# Environment:
#   DURATION       seconds per cell (default 20; 2 with --smoke)
#   ROUNDS         times every cell runs each target, interleaved A B C A B C
#                  in a rotated order; the table shows medians (default 1)
#   TARGETS        subset/order of "direct pgward pgbouncer" (default: all three)
#   MODES          pgbench -M modes (default "simple extended prepared")
#   CLIENTS        client counts (default "1 16 64 256"; "1 16" with --smoke)
#   MEM_CLIENTS    idle clients held open (examples/pgload.rs --hold) to measure the
#                  proxies' memory per client: (RSS with them - RSS before) /
#                  MEM_CLIENTS, on freshly started proxies (default 250; 0 = skip)
#   MEM_HOLD       seconds those clients stay connected (default 4)
#   RESULTS_DIR    where the CSV and tables go (default bench/results)
#   JOBS           pgbench -j (default 2; capped at the client count)
#   SCALE          pgbench -i scale (default 10)
#   WARMUP         warm-up seconds per target before measuring (default 5)
#   PGWARD_ARGS    extra words appended to the pgward command line
#                  (e.g. "--config bench/stats-off.toml")
#   PGWARD_BIN     use this binary instead of target/release/pgward (no build)
#   PGLOAD_BIN     the load generator holding the idle clients (default: built with
#                  cargo build --release --example pgload; bench/run.sh passes its own)
#   BASELINE_BIN   a second pgward binary (e.g. a build of an earlier commit); add
#                  "baseline" to TARGETS for a same-run A/B: it runs with the same
#                  arguments, interleaved, and the table gains pgward/baseline columns
#   PGWARD_ADMIN_LISTEN  pgward admin HTTP address; default: a free port on
#                  127.0.0.1; set it to empty to pass --admin-listen ''
#   KEEP_WORKDIR=1 keep the temp dir (cluster, logs, pgbench output)
#
# All targets run at once on free ports; every cell (mode, clients) runs the
# targets back to back in a rotated order so drifting noise hits all alike.
# Proxy CPU per transaction = Δ(utime+stime) of the proxy process over the
# pgbench run ÷ transactions processed (includes connection set-up/tear-down).
# Raw results: $RESULTS_DIR/passthrough-<timestamp>.csv (+ .md with the table,
# -memory.csv with the per-client memory).
# Postgres runs with max_connections 600 and PgBouncer with a pool of max(CLIENTS)
# + 20 server connections, so -c 256 works in session mode (one server connection
# per client) even while PgBouncer still holds its idle ones from earlier cells.
set -Eeuo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
cd "$REPO_ROOT"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SCRIPT_DIR/lib.sh"
trap 'log "failed at line $LINENO: $BASH_COMMAND"' ERR

usage() { sed -n '2,/^set -Eeuo/{/^set -Eeuo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

SMOKE=0
LABEL=""
while (($#)); do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --label)
            (($# >= 2)) || die "--label needs a value"
            LABEL="$2"
            shift
            ;;
        --label=*) LABEL="${1#--label=}" ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

if ((SMOKE)); then
    DURATION="${DURATION:-2}"
    CLIENTS="${CLIENTS:-1 16}"
    WARMUP="${WARMUP:-2}"
    ROUNDS="${ROUNDS:-1}"
    MEM_HOLD="${MEM_HOLD:-2}"
fi
DURATION="${DURATION:-20}"
CLIENTS="${CLIENTS:-1 16 64 256}"
WARMUP="${WARMUP:-5}"
ROUNDS="${ROUNDS:-1}"
MEM_CLIENTS="${MEM_CLIENTS:-250}"
MEM_HOLD="${MEM_HOLD:-4}"
MODES="${MODES:-simple extended prepared}"
TARGETS="${TARGETS:-direct pgward pgbouncer}"
JOBS="${JOBS:-2}"
SCALE="${SCALE:-10}"
PGWARD_ARGS="${PGWARD_ARGS:-}"

read -r -a targets <<<"$TARGETS"
read -r -a modes <<<"$MODES"
read -r -a clients_list <<<"$CLIENTS"
read -r -a pgward_extra <<<"$PGWARD_ARGS"
((${#targets[@]} > 0)) || die "TARGETS is empty"
for t in "${targets[@]}"; do
    case "$t" in direct | pgward | pgbouncer | baseline) ;; *) die "unknown target '$t' in TARGETS" ;; esac
done
for m in "${modes[@]}"; do
    case "$m" in simple | extended | prepared) ;; *) die "unknown pgbench mode '$m' in MODES" ;; esac
done
for n in DURATION JOBS SCALE WARMUP ROUNDS MEM_HOLD; do
    [[ "${!n}" =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer, got '${!n}'"
done
((${#clients_list[@]} > 0)) || die "CLIENTS is empty"
max_clients=1
for c in "${clients_list[@]}"; do
    [[ "$c" =~ ^[1-9][0-9]*$ ]] || die "CLIENTS: not a positive integer: '$c'"
    ((c > max_clients)) && max_clients=$c
done
[[ "$MEM_CLIENTS" =~ ^[0-9]+$ ]] || die "MEM_CLIENTS must be a number, got '$MEM_CLIENTS'"
((MEM_CLIENTS > max_clients)) && max_clients=$MEM_CLIENTS
((max_clients <= 500)) || die "at most 500 clients (Postgres runs with max_connections 600)"
has_target() {
    local t
    for t in "${targets[@]}"; do [[ "$t" == "$1" ]] && return 0; done
    return 1
}

# ---------------------------------------------------------------- tools
PGBIN="$(pg_bin_dir)" || die "no PostgreSQL server binaries (initdb) found; apt-get install postgresql"
export PATH="$PGBIN:$PATH"
command -v pgbench >/dev/null || die "pgbench not found (expected in $PGBIN)"
command -v psql >/dev/null || die "psql not found (expected in $PGBIN)"
if ((MEM_CLIENTS > 0)); then
    build_pgload
fi
if has_target pgbouncer; then
    ensure_pkg pgbouncer pgbouncer
fi

PGWARD=""
if has_target pgward; then
    if [[ -n "${PGWARD_BIN:-}" ]]; then
        PGWARD="$PGWARD_BIN"
        [[ -x "$PGWARD" ]] || die "PGWARD_BIN=$PGWARD is not executable"
    else
        PGWARD="$REPO_ROOT/target/release/pgward"
        stale=""
        if [[ ! -x "$PGWARD" ]]; then
            stale="missing"
        else
            srcs=()
            for s in src Cargo.toml Cargo.lock build.rs; do [[ -e "$s" ]] && srcs+=("$s"); done
            if [[ -n "$(find "${srcs[@]}" -newer "$PGWARD" -print -quit 2>/dev/null)" ]]; then
                stale="older than the sources"
            fi
        fi
        if [[ -n "$stale" ]]; then
            log "target/release/pgward is $stale: cargo build --release"
            cargo build --release >&2 || die "cargo build --release failed"
        fi
    fi
fi

if has_target baseline; then
    [[ -x "${BASELINE_BIN:-}" ]] || die "TARGETS has baseline: set BASELINE_BIN to an executable pgward"
fi

# ---------------------------------------------------------------- work dir
make_workdir pgward-passthrough

RUN_TS="$(date -u +%Y%m%dT%H%M%SZ)"
RESULTS_DIR="${RESULTS_DIR:-$REPO_ROOT/bench/results}"
mkdir -p "$RESULTS_DIR"
CSV="$RESULTS_DIR/passthrough-$RUN_TS.csv"
MD="$RESULTS_DIR/passthrough-$RUN_TS.md"
MEM_CSV="$RESULTS_DIR/passthrough-$RUN_TS-memory.csv"

csv_field() { # quote when needed
    local v="$1"
    if [[ "$v" == *[,\"]* ]]; then v="\"${v//\"/\"\"}\""; fi
    printf '%s' "$v"
}
FAILED_MEM=0

# ---------------------------------------------------------------- services
declare -A PORT=() PID=()

PG_PORT="$(free_port)"
log "postgres: starting throwaway cluster on 127.0.0.1:$PG_PORT"
pg_start "$WORK/pg" "$PG_PORT" -c max_connections=600
PORT[direct]="$PG_PORT"

wait_sql() { # wait_sql NAME PORT [PID]
    local name="$1" port="$2" pid="${3:-}" i
    for ((i = 0; i < 300; i++)); do
        if psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
            return 0
        fi
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            log "$name (pid $pid) exited during start-up"
            return 1
        fi
        sleep 0.1
    done
    log "$name did not answer 'select 1' on port $port within 30s"
    return 1
}

if has_target pgbouncer; then
    PB_DIR="$WORK/pgbouncer"
    mkdir -p "$PB_DIR"
    PORT[pgbouncer]="$(free_port)"
    cat >"$PB_DIR/userlist.txt" <<'EOF'
"postgres" ""
EOF
    cat >"$PB_DIR/pgbouncer.ini" <<EOF
[databases]
* = host=127.0.0.1 port=$PG_PORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${PORT[pgbouncer]}
unix_socket_dir = $PB_DIR
auth_type = trust
auth_file = $PB_DIR/userlist.txt
admin_users = postgres
pool_mode = session
max_client_conn = 1000
default_pool_size = $((max_clients + 20))
min_pool_size = 0
reserve_pool_size = 0
max_db_connections = 0
max_user_connections = 0
server_idle_timeout = 30
server_reset_query = DISCARD ALL
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
stats_period = 60
logfile = $PB_DIR/pgbouncer.log
pidfile = $PB_DIR/pgbouncer.pid
EOF
    # Debian's pgbouncer dies with "PgBouncer should not run as root":
    # run it as the postgres OS user (what the Debian systemd unit does).
    ((EUID == 0)) && chown -R postgres:postgres "$PB_DIR"
    log "pgbouncer: $(pgbouncer --version | head -n 1) on 127.0.0.1:${PORT[pgbouncer]}"
    bg_start --as-postgres "$PB_DIR/stdout.log" pgbouncer "$PB_DIR/pgbouncer.ini"
    PID[pgbouncer]="$BG_PID"
    wait_sql pgbouncer "${PORT[pgbouncer]}" "${PID[pgbouncer]}" \
        || { tail -n 20 "$PB_DIR/stdout.log" "$PB_DIR/pgbouncer.log" >&2 || true; die "pgbouncer failed to start"; }
fi

# start_pgward TARGET BINARY — one pgward instance on a free port
start_pgward() {
    local t="$1" bin="$2" admin
    PORT[$t]="$(free_port)"
    if [[ -v PGWARD_ADMIN_LISTEN && "$t" == pgward ]]; then
        admin="$PGWARD_ADMIN_LISTEN"
    else
        admin="127.0.0.1:$(free_port)"
    fi
    local cmd=("$bin" --listen "127.0.0.1:${PORT[$t]}" --upstream "127.0.0.1:$PG_PORT"
        --admin-listen "$admin" "${pgward_extra[@]}")
    log "$t: ${cmd[*]}"
    bg_start "$WORK/$t.log" "${cmd[@]}"
    PID[$t]="$BG_PID"
    wait_sql "$t" "${PORT[$t]}" "${PID[$t]}" \
        || { tail -n 30 "$WORK/$t.log" >&2 || true; die "$t failed to start"; }
}
has_target pgward && start_pgward pgward "$PGWARD"
has_target baseline && start_pgward baseline "$BASELINE_BIN"

# ---------------------------------------------------------------- memory per client
# On the freshly started proxies: RSS before, then with MEM_CLIENTS clients that
# connected, ran one SELECT 1 and stay idle (pgload --hold).
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
declare -A MEMPC=() RSS0=() RSS1=()
if ((MEM_CLIENTS > 0)); then
    echo "label,run_ts,target,clients,rss_idle_kib,rss_clients_kib,per_client_kib" >"$MEM_CSV"
    for t in "${targets[@]}"; do
        [[ "$t" == direct ]] && continue
        pid="${PID[$t]}"
        ready="$WORK/hold-$t.ready"
        rm -f "$ready"
        r0="$(rss_kib "$pid")"
        "$PGLOAD" --conn "host=127.0.0.1 port=${PORT[$t]} user=postgres dbname=postgres" \
            --hold "$MEM_CLIENTS" --duration "$MEM_HOLD" --ready-file "$ready" \
            >"$WORK/hold-$t.log" 2>&1 &
        hold_pid=$!
        register_pid "$hold_pid"
        for ((i = 0; i < 600; i++)); do
            [[ -s "$ready" ]] && break
            kill -0 "$hold_pid" 2>/dev/null || break
            sleep 0.1
        done
        r1=""
        if [[ -s "$ready" ]]; then
            sleep 1
            r1="$(rss_kib "$pid")"
        fi
        wait "$hold_pid" || true
        if [[ -z "$r0" || -z "$r1" ]]; then
            log "memory: could not hold $MEM_CLIENTS clients on $t:"
            tail -n 5 "$WORK/hold-$t.log" >&2 || true
            FAILED_MEM=1
            continue
        fi
        pc="$(awk -v a="$r0" -v b="$r1" -v n="$MEM_CLIENTS" 'BEGIN { printf "%.1f", (b - a) / n }')"
        RSS0[$t]="$r0" RSS1[$t]="$r1" MEMPC[$t]="$pc"
        printf '%s\n' "$(csv_field "$LABEL"),$RUN_TS,$t,$MEM_CLIENTS,$r0,$r1,$pc" >>"$MEM_CSV"
        log "memory: $t RSS ${r0} KiB idle, ${r1} KiB with $MEM_CLIENTS clients: $pc KiB per client"
    done
fi

# ---------------------------------------------------------------- data + warm-up
log "pgbench -i -s $SCALE"
pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres >"$WORK/pgbench-init.log" 2>&1 \
    || { tail -n 20 "$WORK/pgbench-init.log" >&2; die "pgbench -i failed"; }
psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c 'vacuum analyze' >/dev/null

for t in "${targets[@]}"; do
    log "warm-up: $t ${WARMUP}s"
    run_killable pgbench -S -n -c 4 -j 2 -T "$WARMUP" -h 127.0.0.1 -p "${PORT[$t]}" -U postgres postgres \
        >"$WORK/warmup-$t.log" 2>&1 || { tail -n 20 "$WORK/warmup-$t.log" >&2; die "warm-up against $t failed"; }
done

# ---------------------------------------------------------------- cells
declare -A TPS=() LAT=() CPUTX=() TPSL=() LATL=() CPUL=()
FAILED=0
echo "label,run_ts,mode,clients,jobs,duration_s,target,round,order_pos,tps,latency_ms,transactions,failed_tx,proxy_cpu_us,cpu_us_per_tx,pgbench_rc" >"$CSV"

# pgbench_field FILE KEY — numbers from pgbench's summary
pgb_tps() { sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$1" | head -n 1; }
pgb_lat() { sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$1" | head -n 1; }
pgb_tx() { sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$1" | head -n 1; }
pgb_failed() { sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$1" | head -n 1; }

# median of the numbers given as arguments (empty when there are none)
median() {
    (($#)) || return 0
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

ncells=$((${#modes[@]} * ${#clients_list[@]}))
est=$((ncells * ${#targets[@]} * ROUNDS * DURATION))
log "running $ncells cells x ${#targets[@]} targets x $ROUNDS rounds x ${DURATION}s (~$((est / 60))m$((est % 60))s)"

cell=0
for mode in "${modes[@]}"; do
    for c in "${clients_list[@]}"; do
        j=$((JOBS < c ? JOBS : c))
        ((j >= 1)) || j=1
        n=${#targets[@]}
        for ((round = 1; round <= ROUNDS; round++)); do
            order=()
            for ((k = 0; k < n; k++)); do order+=("${targets[$(((k + cell + round - 1) % n))]}"); done
            pos=0
            for t in "${order[@]}"; do
                pos=$((pos + 1))
                out="$WORK/cell-$mode-c$c-$t-r$round.log"
                pid="${PID[$t]:-}"
                cpu0="" cpu1="" cpu="" cputx="" rc=0
                if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
                    log "$t is no longer running; skipping $mode c=$c"
                    FAILED=1
                    printf '%s\n' "$(csv_field "$LABEL"),$RUN_TS,$mode,$c,$j,$DURATION,$t,$round,$pos,,,,,,,dead" >>"$CSV"
                    continue
                fi
                [[ -n "$pid" ]] && cpu0="$(proc_cpu_us "$pid")"
                run_killable pgbench -S -n -M "$mode" -c "$c" -j "$j" -T "$DURATION" \
                    -h 127.0.0.1 -p "${PORT[$t]}" -U postgres postgres >"$out" 2>&1 || rc=$?
                [[ -n "$pid" ]] && cpu1="$(proc_cpu_us "$pid" 2>/dev/null || true)"
                tps="$(pgb_tps "$out")"
                lat="$(pgb_lat "$out")"
                tx="$(pgb_tx "$out")"
                failed="$(pgb_failed "$out")"
                if ((rc != 0)) || [[ -z "$tps" ]]; then
                    log "pgbench against $t ($mode c=$c) failed (rc=$rc):"
                    tail -n 5 "$out" >&2 || true
                    FAILED=1
                fi
                if [[ -n "$cpu0" && -n "$cpu1" ]]; then
                    cpu=$((cpu1 - cpu0))
                    if [[ -n "$tx" ]] && ((tx > 0)); then
                        cputx="$(awk -v a="$cpu" -v b="$tx" 'BEGIN { printf "%.2f", a / b }')"
                    fi
                fi
                TPSL[$mode,$c,$t]+="${tps:+ $tps}"
                LATL[$mode,$c,$t]+="${lat:+ $lat}"
                CPUL[$mode,$c,$t]+="${cputx:+ $cputx}"
                printf '%s\n' "$(csv_field "$LABEL"),$RUN_TS,$mode,$c,$j,$DURATION,$t,$round,$pos,$tps,$lat,$tx,$failed,$cpu,$cputx,$rc" >>"$CSV"
                log "$(printf '%-8s c=%-3s r%-2s %-9s tps=%-10s lat=%-7s ms cpu/tx=%s µs' \
                    "$mode" "$c" "$round" "$t" "${tps:-NA}" "${lat:-NA}" "${cputx:--}")"
            done
        done
        for t in "${targets[@]}"; do
            # shellcheck disable=SC2086 # word splitting of the value lists is intended
            {
                TPS[$mode,$c,$t]="$(median ${TPSL[$mode,$c,$t]:-})"
                LAT[$mode,$c,$t]="$(median ${LATL[$mode,$c,$t]:-})"
                CPUTX[$mode,$c,$t]="$(median ${CPUL[$mode,$c,$t]:-})"
            }
        done
        cell=$((cell + 1))
    done
done

# ---------------------------------------------------------------- table
fmt_num() { # fmt_num VALUE DECIMALS
    if [[ -z "$1" ]]; then printf -- '-'; else awk -v v="$1" -v d="$2" 'BEGIN { printf "%.*f", d, v }'; fi
}
ratio() {
    if [[ -z "$1" || -z "$2" ]]; then printf -- '-'; else awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else printf "-" }'; fi
}

versions="$(postgres --version 2>/dev/null | head -n 1)"
if has_target pgbouncer; then
    versions+="; $(pgbouncer --version | head -n 1)"
fi
if has_target pgward; then
    rev="$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
    git -C "$REPO_ROOT" diff --quiet HEAD 2>/dev/null || rev+="+dirty"
    versions+="; pgward $rev${PGWARD_ARGS:+ (args: $PGWARD_ARGS)}"
fi

{
    echo "### pgward pass-through${LABEL:+ — $LABEL} ($RUN_TS)"
    echo
    echo "pgbench -S -n, -T $DURATION per cell, -j min($JOBS, clients), scale $SCALE, $(nproc) CPUs; $versions"
    echo "Medians of $ROUNDS round(s) per cell, targets interleaved. TPS ratios are pgward TPS ÷ other TPS;"
    echo "CPU is the proxy process's utime+stime per transaction."
    echo
    echo "| mode | clients | TPS direct | TPS pgward | TPS pgbouncer | lat ms direct | lat ms pgward | lat ms pgbouncer | pgward/direct | pgward/pgbouncer | CPU µs/tx pgward | CPU µs/tx pgbouncer |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for mode in "${modes[@]}"; do
        for c in "${clients_list[@]}"; do
            td="${TPS[$mode,$c,direct]:-}" tw="${TPS[$mode,$c,pgward]:-}" tb="${TPS[$mode,$c,pgbouncer]:-}"
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
                "$mode" "$c" \
                "$(fmt_num "$td" 0)" "$(fmt_num "$tw" 0)" "$(fmt_num "$tb" 0)" \
                "$(fmt_num "${LAT[$mode,$c,direct]:-}" 3)" "$(fmt_num "${LAT[$mode,$c,pgward]:-}" 3)" \
                "$(fmt_num "${LAT[$mode,$c,pgbouncer]:-}" 3)" \
                "$(ratio "$tw" "$td")" "$(ratio "$tw" "$tb")" \
                "$(fmt_num "${CPUTX[$mode,$c,pgward]:-}" 1)" "$(fmt_num "${CPUTX[$mode,$c,pgbouncer]:-}" 1)"
        done
    done
    if has_target baseline; then
        echo
        echo "Same-run A/B: pgward ÷ baseline ($BASELINE_BIN), same arguments, interleaved."
        echo
        echo "| mode | clients | TPS pgward | TPS baseline | TPS pgward/baseline | CPU µs/tx pgward | CPU µs/tx baseline | CPU/tx pgward/baseline |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|"
        for mode in "${modes[@]}"; do
            for c in "${clients_list[@]}"; do
                tw="${TPS[$mode,$c,pgward]:-}" tz="${TPS[$mode,$c,baseline]:-}"
                cw="${CPUTX[$mode,$c,pgward]:-}" cz="${CPUTX[$mode,$c,baseline]:-}"
                printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$mode" "$c" \
                    "$(fmt_num "$tw" 0)" "$(fmt_num "$tz" 0)" "$(ratio "$tw" "$tz")" \
                    "$(fmt_num "$cw" 1)" "$(fmt_num "$cz" 1)" "$(ratio "$cw" "$cz")"
            done
        done
    fi
    if ((MEM_CLIENTS > 0)) && ((${#MEMPC[@]} > 0)); then
        echo
        echo "Memory per client: RSS of the freshly started proxy with $MEM_CLIENTS idle clients connected"
        echo "(each ran SELECT 1) minus its RSS before they connected, ÷ $MEM_CLIENTS."
        echo
        echo "| proxy | RSS before (KiB) | RSS with $MEM_CLIENTS clients (KiB) | KiB per client |"
        echo "|---|---:|---:|---:|"
        for t in "${targets[@]}"; do
            [[ -n "${MEMPC[$t]:-}" ]] || continue
            printf '| %s | %s | %s | %s |\n' "$t" "${RSS0[$t]}" "${RSS1[$t]}" "${MEMPC[$t]}"
        done
    fi
} | tee "$MD"

SVG="$RESULTS_DIR/passthrough-$RUN_TS.svg"
if command -v python3 >/dev/null 2>&1; then
    python3 "$SCRIPT_DIR/chart.py" bars "$CSV" "$SVG" || log "chart: failed to draw $SVG"
fi

echo
mem_note=""
((MEM_CLIENTS > 0)) && mem_note="   memory: ${MEM_CSV#"$REPO_ROOT"/}"
echo "raw CSV: ${CSV#"$REPO_ROOT"/}   table: ${MD#"$REPO_ROOT"/}$mem_note"
[[ -f "$SVG" ]] && echo "chart: ${SVG#"$REPO_ROOT"/}"

if ((FAILED_MEM)); then
    log "the memory measurement failed (see above)"
    FAILED=1
fi
if ((FAILED)); then
    log "some cells failed (see above)"
    exit 1
fi
_bench_ok=1
