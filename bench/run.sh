#!/usr/bin/env bash
# bench/run.sh — the pgward benchmarks, one entry point.
#
# Usage: bench/run.sh [passthrough|hits|cache|incident|all] [--smoke]
#
#   passthrough  pgbench -S through pgward vs direct vs PgBouncer (session mode),
#                -c 1/16/64/256, three protocols, plus memory per idle client
#                (bench/passthrough.sh with the durations below)
#   hits         what a cache hit costs: pgward answering a cached read vs PostgreSQL
#                answering SELECT 1, three protocols, -c 1/16, and proof that hits send
#                PostgreSQL nothing (bench/hits.sh with the durations below)
#   cache        the recommendation query (bench/reco.sql, zipfian product ids)
#                on the shop data: direct vs pgward without rules vs pgward with
#                the repo's rules.toml; TPS medians and the ratio to direct
#   incident     one run of the load generator (examples/pgload.rs) with three
#                workloads: normal product-page traffic first (recommendations at a
#                normal rate, not measured: the shop ran before the campaign), then
#                checkouts (bench/checkout.sql) at a fixed rate; calm phase (checkout
#                only), then a flood of recommendation queries beside them; direct vs
#                pgward without rules vs pgward with rules.toml: checkout
#                p50/p95/p99 and success per phase, recommendations answered
#   all          the four in that order (default)
#   --smoke      seconds-long runs of everything (what CI runs)
#
# It starts its own throwaway PostgreSQL clusters (bench/lib.sh pg_start), builds
# pgward and the load generator (cargo build --release --bin pgward, --example pgload
# in this repository), installs pgbench, PgBouncer and python3 from Debian when they
# are missing, runs the configurations
# interleaved and prints tables. Everything lands in bench/results/<timestamp>/:
# summary.md (all tables), environment.txt, raw CSVs, SVG charts, pgward's
# /stats/queries and /rules snapshots.
#
# Environment (defaults for a full run; --smoke shortens them):
#   RESULTS_DIR      output folder (default bench/results/<UTC timestamp>)
#   PGWARD_BIN       use this pgward binary instead of building one
#   PGLOAD_BIN       use this load generator instead of building examples/pgload.rs
#   RULES            rules file for the "pgward + rules" configuration (default rules.toml)
#   pass-through:    PT_DURATION 5, PT_ROUNDS 3, PT_CLIENTS "1 16 64 256",
#                    PT_MODES "simple extended prepared", PT_WARMUP 3, PT_SCALE 10,
#                    MEM_CLIENTS 250
#   cache hits:      HITS_DURATION 5, HITS_ROUNDS 3, HITS_CLIENTS "1 16",
#                    HITS_MODES "simple extended prepared"
#   shop data:       SHOP_SCALE 1 (order_items ~1M rows; bench/shop.sql)
#   cache:           CACHE_DURATION 15, CACHE_ROUNDS 3, CACHE_CLIENTS 16, CACHE_JOBS 2,
#                    CACHE_WARMUP 5
#   incident:        WARM_SECS 30 at RECO_NORMAL_RATE 50 (/s) before the calm phase,
#                    CALM_SECS 20, INCIDENT_SECS 40, INCIDENT_ROUNDS 1,
#                    CHECKOUT_RATE 50 (/s), CHECKOUT_CLIENTS 16,
#                    CHECKOUT_LIMIT_MS 5000 (a checkout later than this is not a
#                    success; one queued this long is given up), RECO_RATE 400 (/s),
#                    RECO_CLIENTS 128, RECO_TIMEOUT 5 (s a queued recommendation
#                    waits before the caller gives up)
#   CACHE_TARGETS, INCIDENT_CONFIGS
#                    subset/order of "direct pgward-norules pgward-rules" (default: all)
#   KEEP_WORKDIR=1   keep the temporary folder (clusters, logs)
#
# A full run (`all`) takes about 20 minutes on 2 cores, plus the release build.
set -Eeuo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
cd "$REPO_ROOT"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SCRIPT_DIR/lib.sh"
trap 'log "failed at line $LINENO: $BASH_COMMAND"' ERR

usage() { sed -n '2,/^set -Eeuo/{/^set -Eeuo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

WHAT=all
SMOKE=0
while (($#)); do
    case "$1" in
        passthrough | hits | cache | incident | all) WHAT="$1" ;;
        --smoke) SMOKE=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

if ((SMOKE)); then
    : "${PT_DURATION:=2}" "${PT_ROUNDS:=1}" "${PT_CLIENTS:=16}" "${PT_WARMUP:=1}" "${PT_SCALE:=1}"
    : "${MEM_CLIENTS:=250}" "${MEM_HOLD:=2}"
    : "${HITS_DURATION:=1}" "${HITS_ROUNDS:=1}" "${HITS_CLIENTS:=1}"
    : "${SHOP_SCALE:=0.1}"
    : "${CACHE_DURATION:=3}" "${CACHE_ROUNDS:=1}" "${CACHE_CLIENTS:=8}" "${CACHE_WARMUP:=1}"
    : "${WARM_SECS:=2}" "${CALM_SECS:=4}" "${INCIDENT_SECS:=6}" "${CHECKOUT_RATE:=20}" "${CHECKOUT_CLIENTS:=4}"
    : "${RECO_RATE:=100}" "${RECO_CLIENTS:=16}"
fi
: "${PT_DURATION:=5}" "${PT_ROUNDS:=3}" "${PT_CLIENTS:=1 16 64 256}" "${PT_WARMUP:=3}" "${PT_SCALE:=10}"
: "${PT_MODES:=simple extended prepared}" "${MEM_CLIENTS:=250}" "${MEM_HOLD:=4}"
: "${HITS_DURATION:=5}" "${HITS_ROUNDS:=3}" "${HITS_CLIENTS:=1 16}" "${HITS_MODES:=simple extended prepared}"
: "${SHOP_SCALE:=1}"
: "${CACHE_DURATION:=15}" "${CACHE_ROUNDS:=3}" "${CACHE_CLIENTS:=16}" "${CACHE_JOBS:=2}" "${CACHE_WARMUP:=5}"
: "${WARM_SECS:=30}" "${RECO_NORMAL_RATE:=50}"
: "${CALM_SECS:=20}" "${INCIDENT_SECS:=40}" "${INCIDENT_ROUNDS:=1}"
: "${CHECKOUT_RATE:=50}" "${CHECKOUT_CLIENTS:=16}" "${CHECKOUT_LIMIT_MS:=5000}"
: "${RECO_RATE:=400}" "${RECO_CLIENTS:=128}" "${RECO_TIMEOUT:=5}"
: "${RULES:=$REPO_ROOT/rules.toml}"
: "${CACHE_TARGETS:=direct pgward-norules pgward-rules}" "${INCIDENT_CONFIGS:=direct pgward-norules pgward-rules}"
for t in $CACHE_TARGETS $INCIDENT_CONFIGS; do
    case "$t" in direct | pgward-norules | pgward-rules) ;; *) die "unknown configuration '$t' (direct, pgward-norules, pgward-rules)" ;; esac
done
[[ -n "${CACHE_TARGETS// /}" && -n "${INCIDENT_CONFIGS// /}" ]] || die "CACHE_TARGETS and INCIDENT_CONFIGS must not be empty"

for n in PT_DURATION PT_ROUNDS PT_WARMUP PT_SCALE MEM_HOLD HITS_DURATION HITS_ROUNDS CACHE_DURATION CACHE_ROUNDS CACHE_CLIENTS \
    CACHE_JOBS CACHE_WARMUP CALM_SECS INCIDENT_SECS INCIDENT_ROUNDS CHECKOUT_CLIENTS CHECKOUT_LIMIT_MS \
    RECO_CLIENTS WARM_SECS; do
    [[ "${!n}" =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer, got '${!n}'"
done
for n in SHOP_SCALE CHECKOUT_RATE RECO_RATE RECO_TIMEOUT; do
    [[ "${!n}" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "$n must be a positive number, got '${!n}'"
done
[[ -f "$RULES" ]] || die "RULES=$RULES: no such file"
RULES="$(cd "$(dirname "$RULES")" && pwd)/$(basename "$RULES")"

want() { [[ "$WHAT" == all || "$WHAT" == "$1" ]]; }
T_START=$SECONDS

# ---------------------------------------------------------------- tools
ensure_pg_server
PGBIN="$(pg_bin_dir)"
export PATH="$PGBIN:$PATH"
ensure_pkg pgbench postgresql-client
ensure_pkg psql postgresql-client
ensure_pkg python3 python3
if want passthrough; then
    ensure_pkg pgbouncer pgbouncer
fi

if [[ -n "${PGWARD_BIN:-}" ]]; then
    PGWARD="$PGWARD_BIN"
    [[ -x "$PGWARD" ]] || die "PGWARD_BIN=$PGWARD is not executable"
else
    log "cargo build --release --bin pgward"
    cargo build --release --bin pgward >&2 || die "cargo build --release failed"
    PGWARD="$(cargo_target_dir)/release/pgward"
fi
build_pgload
if (want cache || want incident) && ! "$PGWARD" check "$RULES" >/dev/null 2>&1; then
    "$PGWARD" check "$RULES" >&2 || true
    die "this pgward does not accept $RULES (see above)"
fi

# ---------------------------------------------------------------- output
RUN_TS="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="${RESULTS_DIR:-$REPO_ROOT/bench/results/$RUN_TS}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SUMMARY="$OUT/summary.md"
make_workdir pgward-bench
FAILED=0

SMOKE_FLAG=""
((SMOKE)) && SMOKE_FLAG=" --smoke"
export BENCH_SMOKE="$SMOKE"
rev="$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
git -C "$REPO_ROOT" diff --quiet HEAD 2>/dev/null || rev+="+dirty"
{
    echo "run: bench/run.sh $WHAT${SMOKE_FLAG} at $RUN_TS"
    echo "pgward: $rev ($PGWARD)"
    echo "rules: $RULES"
    echo "cpu: $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    echo "memory: $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "kernel: $(uname -sr)"
    echo "postgres: $(postgres --version | head -n 1)"
    echo "pgbench: $(pgbench --version | head -n 1)"
    command -v pgbouncer >/dev/null && echo "pgbouncer: $(pgbouncer --version | head -n 1)"
    echo "python3: $(python3 --version 2>&1)"
    echo "pgload: $PGLOAD"
    for n in PT_DURATION PT_ROUNDS PT_CLIENTS PT_MODES PT_WARMUP PT_SCALE MEM_CLIENTS MEM_HOLD \
        HITS_DURATION HITS_ROUNDS HITS_CLIENTS HITS_MODES SHOP_SCALE \
        CACHE_DURATION CACHE_ROUNDS CACHE_CLIENTS CACHE_JOBS CACHE_WARMUP CALM_SECS INCIDENT_SECS \
        INCIDENT_ROUNDS CHECKOUT_RATE CHECKOUT_CLIENTS CHECKOUT_LIMIT_MS RECO_RATE RECO_CLIENTS RECO_TIMEOUT WARM_SECS RECO_NORMAL_RATE \
        CACHE_TARGETS INCIDENT_CONFIGS; do
        echo "$n=${!n}"
    done
} >"$OUT/environment.txt"
{
    echo "# pgward benchmarks ($RUN_TS)"
    echo
    echo '```'
    cat "$OUT/environment.txt"
    echo '```'
    echo
    if ((SMOKE)); then
        echo "**Smoke run**: seconds-long runs on reduced data; the numbers only show that every part works."
        echo
    fi
} >"$SUMMARY"

http_get() { # http_get URL FILE — best effort
    python3 - "$1" "$2" <<'EOF' || true
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
        open(sys.argv[2], "wb").write(r.read())
except Exception as e:
    print(f"could not fetch {sys.argv[1]}: {e}", file=sys.stderr)
EOF
}
wait_sql() { # wait_sql NAME PORT [PID]
    local name="$1" port="$2" pid="${3:-}" i
    for ((i = 0; i < 300; i++)); do
        psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1 && return 0
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            log "$name (pid $pid) exited during start-up"
            return 1
        fi
        sleep 0.1
    done
    log "$name did not answer 'select 1' on port $port within 30s"
    return 1
}

# ---------------------------------------------------------------- pass-through
if want passthrough; then
    log "== pass-through (bench/passthrough.sh)"
    pt_args=()
    ((SMOKE)) && pt_args+=(--smoke)
    rc=0
    RESULTS_DIR="$OUT" PGWARD_BIN="$PGWARD" DURATION="$PT_DURATION" ROUNDS="$PT_ROUNDS" \
        CLIENTS="$PT_CLIENTS" MODES="$PT_MODES" WARMUP="$PT_WARMUP" SCALE="$PT_SCALE" \
        MEM_CLIENTS="$MEM_CLIENTS" MEM_HOLD="$MEM_HOLD" \
        run_killable bash "$SCRIPT_DIR/passthrough.sh" "${pt_args[@]}" || rc=$?
    if ((rc != 0)); then
        log "pass-through benchmark failed (exit $rc)"
        FAILED=1
    fi
    for f in "$OUT"/passthrough-*.md; do
        [[ -f "$f" ]] && { cat "$f"; echo; } >>"$SUMMARY"
    done
fi

# ---------------------------------------------------------------- cache hits
if want hits; then
    log "== cache hits vs direct SELECT 1 (bench/hits.sh)"
    hits_args=()
    ((SMOKE)) && hits_args+=(--smoke)
    rc=0
    RESULTS_DIR="$OUT" PGWARD_BIN="$PGWARD" DURATION="$HITS_DURATION" ROUNDS="$HITS_ROUNDS" \
        CLIENTS="$HITS_CLIENTS" MODES="$HITS_MODES" \
        run_killable bash "$SCRIPT_DIR/hits.sh" "${hits_args[@]}" || rc=$?
    if ((rc != 0)); then
        log "cache-hit benchmark failed (exit $rc)"
        FAILED=1
    fi
    for f in "$OUT"/hits-*.md; do
        [[ -f "$f" ]] && { cat "$f"; echo; } >>"$SUMMARY"
    done
fi

# ---------------------------------------------------------------- shop cluster
declare -A PW_PORT=() PW_ADMIN=() PW_PID=()
SHOP_PORT=""
if want cache || want incident; then
    SHOP_PORT="$(free_port)"
    log "== shop database: throwaway cluster on 127.0.0.1:$SHOP_PORT"
    pg_start "$WORK/shop-pg" "$SHOP_PORT" -c max_wal_size=4GB -c checkpoint_timeout=30min
    psql -X -q -h 127.0.0.1 -p "$SHOP_PORT" -U postgres -d postgres -c 'CREATE DATABASE shop' >/dev/null
    t0=$SECONDS
    psql -X -q -v ON_ERROR_STOP=1 -v scale="$SHOP_SCALE" -h 127.0.0.1 -p "$SHOP_PORT" -U postgres -d shop \
        -f "$SCRIPT_DIR/shop.sql" >"$WORK/shop-load.log" 2>&1 \
        || { tail -n 20 "$WORK/shop-load.log" >&2; die "loading bench/shop.sql failed"; }
    counts="$(psql -X -At -F ' ' -h 127.0.0.1 -p "$SHOP_PORT" -U postgres -d shop -c \
        "SELECT (SELECT count(*) FROM products), (SELECT count(*) FROM customers), (SELECT count(*) FROM orders), (SELECT count(*) FROM order_items)")"
    read -r n_products n_customers n_orders n_items <<<"$counts"
    log "shop loaded in $((SECONDS - t0))s (scale $SHOP_SCALE): products $n_products, customers $n_customers, orders $n_orders, order_items $n_items"
    echo "shop data (scale $SHOP_SCALE, loaded in $((SECONDS - t0)) s): products $n_products, customers $n_customers, orders $n_orders, order_items $n_items" >>"$OUT/environment.txt"
fi
shop_psql() { psql -X -q -At -h 127.0.0.1 -p "$SHOP_PORT" -U postgres -d shop "$@"; }

# start_pgward NAME [RULES_FILE] — pgward in front of the shop cluster on free ports
start_pgward() {
    local name="$1" rules="${2:-}" conf="$WORK/pgward-$1.toml"
    PW_PORT[$name]="$(free_port)"
    PW_ADMIN[$name]="$(free_port)"
    {
        echo "listen = '127.0.0.1:${PW_PORT[$name]}'"
        echo "shutdown_timeout = '2s'"
        [[ -n "$rules" ]] && echo "rules = '$rules'"
        echo "[upstream]"
        echo "address = '127.0.0.1:$SHOP_PORT'"
        echo "tls = 'disable'"
        echo "[admin]"
        echo "listen = '127.0.0.1:${PW_ADMIN[$name]}'"
    } >"$conf"
    bg_start "$WORK/pgward-$name.log" "$PGWARD" --config "$conf"
    PW_PID[$name]="$BG_PID"
    wait_sql "pgward $name" "${PW_PORT[$name]}" "$BG_PID" \
        || { tail -n 30 "$WORK/pgward-$name.log" >&2 || true; die "pgward ($name) failed to start"; }
}
stop_pgward() {
    local name="$1" pid="${PW_PID[$1]:-}" i
    [[ -n "$pid" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    PW_PID[$name]=""
}
snapshot_pgward() { # snapshot_pgward NAME TAG — /stats/queries and /rules into the results
    local a="127.0.0.1:${PW_ADMIN[$1]}"
    http_get "http://$a/stats/queries?sort=calls&limit=20" "$OUT/$2-stats-queries.json"
    http_get "http://$a/rules" "$OUT/$2-rules.json"
}
target_port() {
    case "$1" in
        direct) echo "$SHOP_PORT" ;;
        *) echo "${PW_PORT[$1]}" ;;
    esac
}
# settle — wait until no other query runs on the shop cluster (leftovers of the previous
# configuration), then vacuum the updated table and checkpoint so the next run starts alike
settle() {
    local i n
    for ((i = 0; i < 150; i++)); do
        n="$(shop_psql -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND state <> 'idle' AND pid <> pg_backend_pid()")"
        [[ "$n" == 0 ]] && break
        sleep 0.2
    done
    if [[ "$n" != 0 ]]; then
        log "settle: terminating $n leftover queries"
        shop_psql -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()" >/dev/null
    fi
    shop_psql -c 'VACUUM products' -c 'CHECKPOINT' >/dev/null
    sleep 1
}
pgb_tps() { sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$1" | head -n 1; }
pgb_lat() { sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$1" | head -n 1; }
pgb_tx() { sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$1" | head -n 1; }
pgb_aborted() { grep -c 'aborted in command' "$1" || true; }

# ---------------------------------------------------------------- cache
if want cache; then
    log "== hot reads: recommendation query, ${CACHE_ROUNDS} round(s) x ${CACHE_DURATION}s x ($CACHE_TARGETS)"
    read -r -a targets <<<"$CACHE_TARGETS"
    nt=${#targets[@]}
    for t in "${targets[@]}"; do
        case "$t" in
            pgward-norules) start_pgward pgward-norules ;;
            pgward-rules)
                start_pgward pgward-rules "$RULES"
                http_get "http://127.0.0.1:${PW_ADMIN[pgward-rules]}/rules" "$OUT/cache-pgward-rules-rules-start.json"
                ;;
        esac
    done
    CSV="$OUT/cache.csv"
    echo "run_ts,target,round,order_pos,clients,jobs,duration_s,tps,latency_ms,transactions,aborted_clients,pgbench_rc" >"$CSV"
    for t in "${targets[@]}"; do
        log "warm-up: $t ${CACHE_WARMUP}s"
        run_killable pgbench -n -f "$SCRIPT_DIR/reco.sql" -c 4 -j 2 -T "$CACHE_WARMUP" \
            -h 127.0.0.1 -p "$(target_port "$t")" -U postgres shop >"$WORK/cache-warmup-$t.log" 2>&1 || true
    done
    j=$((CACHE_JOBS < CACHE_CLIENTS ? CACHE_JOBS : CACHE_CLIENTS))
    for ((round = 1; round <= CACHE_ROUNDS; round++)); do
        for ((k = 0; k < nt; k++)); do
            t="${targets[$(((k + round - 1) % nt))]}"
            o="$WORK/cache-$t-r$round.log"
            pid="${PW_PID[$t]:-}"
            if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
                log "$t is no longer running"
                FAILED=1
                continue
            fi
            rc=0
            run_killable pgbench -n -f "$SCRIPT_DIR/reco.sql" -c "$CACHE_CLIENTS" -j "$j" -T "$CACHE_DURATION" \
                -h 127.0.0.1 -p "$(target_port "$t")" -U postgres shop >"$o" 2>&1 || rc=$?
            tps="$(pgb_tps "$o")" lat="$(pgb_lat "$o")" tx="$(pgb_tx "$o")" ab="$(pgb_aborted "$o")"
            if [[ -z "$tps" && "$tx" == 0 ]] && ((ab > 0)); then
                # every client hit an error (pgbench 15 aborts a client on one): a result, not a crash
                log "$t: all $ab pgbench clients aborted on an error, e.g.: $(grep -m 1 'aborted in command' "$o" | cut -c 1-200)"
                tps=0
            elif [[ -z "$tps" ]]; then
                log "pgbench against $t printed no result (rc=$rc):"
                tail -n 5 "$o" >&2 || true
                FAILED=1
            elif ((ab > 0)); then
                log "$t: $ab of $CACHE_CLIENTS pgbench clients aborted on an error, e.g.: $(grep -m 1 'aborted in command' "$o" | cut -c 1-200)"
            fi
            echo "$RUN_TS,$t,$round,$((k + 1)),$CACHE_CLIENTS,$j,$CACHE_DURATION,$tps,$lat,$tx,$ab,$rc" >>"$CSV"
            log "$(printf 'round %s %-15s tps=%-10s lat=%-8s ms aborted=%s' "$round" "$t" "${tps:-NA}" "${lat:-NA}" "$ab")"
        done
    done
    for t in "${targets[@]}"; do
        [[ "$t" == direct ]] && continue
        snapshot_pgward "$t" "cache-$t"
        stop_pgward "$t"
    done
    python3 "$SCRIPT_DIR/report.py" cache "$CSV" "$SUMMARY" || { log "report.py cache failed"; FAILED=1; }
fi

# ---------------------------------------------------------------- incident
if want incident; then
    total=$((CALM_SECS + INCIDENT_SECS))
    log "== incident replay: ${INCIDENT_ROUNDS} round(s) x ($INCIDENT_CONFIGS) x ${total}s (calm ${CALM_SECS}s, incident ${INCIDENT_SECS}s)"
    RUNS="$OUT/incident-runs.csv"
    echo "run_ts,config,round,start,flood_start,flood_end,load_json,load_log,checkout_rate,checkout_clients,calm_s,incident_s,reco_rate,reco_clients,latency_limit_ms" >"$RUNS"
    limit_s="$(awk -v m="$CHECKOUT_LIMIT_MS" 'BEGIN { printf "%.3f", m / 1000 }')"
    drain="$(awk -v a="$limit_s" -v b="$RECO_TIMEOUT" 'BEGIN { print (a > b ? a : b) }')"
    read -r -a configs <<<"$INCIDENT_CONFIGS"
    nc=${#configs[@]}
    for ((round = 1; round <= INCIDENT_ROUNDS; round++)); do
        for ((k = 0; k < nc; k++)); do
            cfg="${configs[$(((k + round - 1) % nc))]}"
            tag="incident-$cfg-r$round"
            settle
            case "$cfg" in
                pgward-norules) start_pgward "$cfg" ;;
                pgward-rules) start_pgward "$cfg" "$RULES" ;;
            esac
            port="$(target_port "$cfg")"
            log "$tag: ${WARM_SECS}s of normal traffic (${RECO_NORMAL_RATE}/s recommendations, not measured), then checkout at ${CHECKOUT_RATE}/s; flood of ${RECO_RATE}/s recommendations from ${CALM_SECS}s to ${total}s"
            # One load generator, three workloads on one clock. The seed is the round's: every
            # configuration of a round gets the same arrival times and drawn ids.
            rc=0
            run_killable "$PGLOAD" --conn "host=127.0.0.1 port=$port user=postgres dbname=shop" \
                --seed "$round" --drain "$drain" --log "$OUT/$tag-load.csv" \
                -w "name=reco-normal,script=$SCRIPT_DIR/reco.sql,clients=8,rate=$RECO_NORMAL_RATE,timeout=$RECO_TIMEOUT,duration=$WARM_SECS" \
                -w "name=checkout,script=$SCRIPT_DIR/checkout.sql,clients=$CHECKOUT_CLIENTS,rate=$CHECKOUT_RATE,timeout=$limit_s,start=$WARM_SECS,duration=$total" \
                -w "name=reco-flood,script=$SCRIPT_DIR/reco.sql,clients=$RECO_CLIENTS,rate=$RECO_RATE,timeout=$RECO_TIMEOUT,start=$((WARM_SECS + CALM_SECS)),duration=$INCIDENT_SECS" \
                >"$OUT/$tag-load.json" 2>"$WORK/$tag-load.err" || rc=$?
            times=""
            if ((rc == 0)); then
                times="$(python3 "$SCRIPT_DIR/report.py" times "$OUT/$tag-load.json")" || times=""
            fi
            if [[ -z "$times" ]]; then
                log "$tag: pgload failed (exit $rc):"
                tail -n 5 "$WORK/$tag-load.err" >&2 || true
                FAILED=1
                [[ "$cfg" != direct ]] && stop_pgward "$cfg"
                continue
            fi
            read -r start flood_start flood_end line <<<"$times"
            log "$tag: $line"
            if [[ "$cfg" != direct ]]; then
                snapshot_pgward "$cfg" "$tag"
                stop_pgward "$cfg"
            fi
            printf '%s\n' "$RUN_TS,$cfg,$round,$start,$flood_start,$flood_end,$OUT/$tag-load.json,$OUT/$tag-load.csv,$CHECKOUT_RATE,$CHECKOUT_CLIENTS,$CALM_SECS,$INCIDENT_SECS,$RECO_RATE,$RECO_CLIENTS,$CHECKOUT_LIMIT_MS" >>"$RUNS"
        done
    done
    python3 "$SCRIPT_DIR/report.py" incident "$RUNS" "$OUT" "$SUMMARY" || { log "report.py incident failed"; FAILED=1; }
fi

# ---------------------------------------------------------------- done
elapsed=$((SECONDS - T_START))
echo "bench/run.sh $WHAT took $((elapsed / 60))m$((elapsed % 60))s" | tee -a "$OUT/environment.txt"
echo "results: ${OUT#"$REPO_ROOT"/}/ (summary.md, CSV, SVG)"
if ((FAILED)); then
    log "some benchmarks failed (see above)"
    exit 1
fi
_bench_ok=1
