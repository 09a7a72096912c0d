#!/usr/bin/env bash
# bench/hits.sh — what a cache hit costs: pgward answering a cached read from memory vs
# PostgreSQL answering `SELECT 1` (the cheapest query it can run), in the three pgbench
# protocols, same run, interleaved; and proof that a hit sends PostgreSQL nothing.
# `bench/run.sh hits` runs it with the durations of the full benchmark.
#
# Usage: bench/hits.sh [--smoke] [--label NAME]
#
#   --smoke        -T 1 per cell, one round, one client, targets direct and hit (quick
#                  sanity run of every part: about 25 s)
#   --label NAME   tag stored in the CSV and printed with the table
#
# Targets (TARGETS, in this order by default: "direct hit hit100"):
#   direct   PostgreSQL, pgbench script `SELECT 1;`
#   hit      pgward whose rule caches `SELECT id, name, price FROM items WHERE id = :id`
#            (cache.ttl 1h, invalidate "ttl"), with `\set id 42`: every transaction is a
#            hit on one entry
#   hit100   the same pgward and query with `\set id random(1, 100)`: hits cycle through
#            100 entries
#   read     (not by default) PostgreSQL running that items query itself
# Both hit targets are warmed up (every entry filled) before the first cell, in every mode.
#
# Environment:
#   DURATION       seconds per cell (default 10; 1 with --smoke)
#   ROUNDS         times every cell runs each target, interleaved A B C, B C A, ...;
#                  the table shows medians (default 3; 1 with --smoke)
#   CLIENTS        pgbench client counts (default "1 16"; "1" with --smoke)
#   MODES          pgbench -M modes (default "simple extended prepared")
#   TARGETS        subset/order of "direct hit hit100 read" (default "direct hit hit100";
#                  "direct hit" with --smoke)
#   JOBS           pgbench -j (default 2; capped at the client count)
#   SAMPLING       share of transactions pgbench logs (-l --sampling-rate) for the client-side
#                  latency percentiles (default 0.1)
#   WARMUP_TX      transactions per client of each target's warm-up, per mode (default 1000)
#   ITEMS          rows in the items table (default 1000; at least 100)
#   RESULTS_DIR    where the CSV and tables go (default bench/results)
#   PGWARD_BIN     use this binary instead of target/release/pgward (no build; without it,
#                  $CARGO_TARGET_DIR/release/pgward when that is set, built when missing or
#                  older than the sources)
#   KEEP_WORKDIR=1 keep the temp dir (cluster, logs, pgbench output, stats snapshots)
#
# Per cell: pgbench TPS, average latency and client-side p50/p99 latency (from a sample of
# pgbench's per-transaction log: robust against the scheduling stalls of a busy machine, which
# dominate the average; only where every pgbench thread runs one client — a thread running
# several reads its clock once per round of their results, so their latencies come out
# quantized, down to 0); pgward CPU per transaction (Δ utime+stime of
# the pgward process ÷ transactions); PostgreSQL CPU per transaction (Δ of the postmaster's
# own and reaped children's CPU — every backend of the cell has exited when it is read —
# ÷ transactions; it includes the cell's connection start-ups and this script's few psql
# probes); hit ÷ direct TPS. Proof that hits reach PostgreSQL not at all:
#   - pg_stat_database of the benchmark database (xact_commit, tup_returned) before and
#     after each cell, read from another database once the cell's backends have exited
#     (a backend flushes its statistics when it exits);
#   - pg_stat_activity.state_change of the benchmark database's backends (pgward's upstream
#     connections), sampled early and late in each cell: how many moved;
#   - pgward's GET /stats/queries (statistics reset before each pgward cell): calls,
#     cache_hits, cache_misses of the items fingerprint, upstream connections opened, and
#     the hits' p50/p99 latency as pgward records it.
# Raw results: $RESULTS_DIR/hits-<timestamp>.csv (+ .md with the tables and the `uptime` load
# before and after, -cache.json with pgward's GET /cache at the end).
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
    DURATION="${DURATION:-1}"
    ROUNDS="${ROUNDS:-1}"
    CLIENTS="${CLIENTS:-1}"
    TARGETS="${TARGETS:-direct hit}"
fi
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
CLIENTS="${CLIENTS:-1 16}"
MODES="${MODES:-simple extended prepared}"
TARGETS="${TARGETS:-direct hit hit100}"
JOBS="${JOBS:-2}"
SAMPLING="${SAMPLING:-0.1}"
WARMUP_TX="${WARMUP_TX:-1000}"
ITEMS="${ITEMS:-1000}"

read -r -a targets <<<"$TARGETS"
read -r -a modes <<<"$MODES"
read -r -a clients_list <<<"$CLIENTS"
((${#targets[@]} > 0)) || die "TARGETS is empty"
for t in "${targets[@]}"; do
    case "$t" in direct | hit | hit100 | read) ;; *) die "unknown target '$t' in TARGETS (direct, hit, hit100, read)" ;; esac
done
((${#modes[@]} > 0)) || die "MODES is empty"
for m in "${modes[@]}"; do
    case "$m" in simple | extended | prepared) ;; *) die "unknown pgbench mode '$m' in MODES" ;; esac
done
[[ "$SAMPLING" =~ ^(0\.[0-9]*[1-9][0-9]*|1(\.0*)?)$ ]] || die "SAMPLING must be in (0, 1], got '$SAMPLING'"
for n in DURATION ROUNDS JOBS WARMUP_TX ITEMS; do
    [[ "${!n}" =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer, got '${!n}'"
done
((ITEMS >= 100)) || die "ITEMS must be at least 100 (hit100 reads ids 1 to 100), got $ITEMS"
((${#clients_list[@]} > 0)) || die "CLIENTS is empty"
for c in "${clients_list[@]}"; do
    [[ "$c" =~ ^[1-9][0-9]*$ ]] || die "CLIENTS: not a positive integer: '$c'"
    ((c <= 250)) || die "CLIENTS: at most 250 (PostgreSQL runs with max_connections 300), got $c"
done
has_target() {
    local t
    for t in "${targets[@]}"; do [[ "$t" == "$1" ]] && return 0; done
    return 1
}
is_pgward() { [[ "$1" == hit || "$1" == hit100 ]]; }
USE_PGWARD=0
{ has_target hit || has_target hit100; } && USE_PGWARD=1

# ---------------------------------------------------------------- tools
PGBIN="$(pg_bin_dir)" || die "no PostgreSQL server binaries (initdb) found; apt-get install postgresql"
export PATH="$PGBIN:$PATH"
command -v pgbench >/dev/null || die "pgbench not found (expected in $PGBIN)"
command -v psql >/dev/null || die "psql not found (expected in $PGBIN)"
ensure_pkg python3 python3

PGWARD=""
if ((USE_PGWARD)); then
    if [[ -n "${PGWARD_BIN:-}" ]]; then
        PGWARD="$PGWARD_BIN"
        [[ -x "$PGWARD" ]] || die "PGWARD_BIN=$PGWARD is not executable"
    else
        PGWARD="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/pgward"
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
            log "${PGWARD#"$REPO_ROOT"/} is $stale: cargo build --release"
            cargo build --release >&2 || die "cargo build --release failed"
        fi
    fi
fi

# ---------------------------------------------------------------- work dir
make_workdir pgward-hits

RUN_TS="$(date -u +%Y%m%dT%H%M%SZ)"
RESULTS_DIR="${RESULTS_DIR:-$REPO_ROOT/bench/results}"
mkdir -p "$RESULTS_DIR"
CSV="$RESULTS_DIR/hits-$RUN_TS.csv"
MD="$RESULTS_DIR/hits-$RUN_TS.md"
LOAD_BEFORE="$(uptime)"

csv_field() { # quote when needed
    local v="$1"
    if [[ "$v" == *[,\"]* ]]; then v="\"${v//\"/\"\"}\""; fi
    printf '%s' "$v"
}

# ---------------------------------------------------------------- PostgreSQL
DB=bench
PG_PORT="$(free_port)"
log "postgres: starting throwaway cluster on 127.0.0.1:$PG_PORT"
# autovacuum off: its worker visits every database once a minute and its transactions would
# count in the benchmark database's xact_commit (the tables are vacuumed and analyzed below)
pg_start "$WORK/pg" "$PG_PORT" -c autovacuum=off
PG_MAIN_PID="$(head -n 1 "$WORK/pg/data/postmaster.pid")"
# probes run in database postgres, so they leave the benchmark database's counters alone
admin_psql() { psql -X -q -At -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres "$@"; }
admin_psql -c "CREATE DATABASE $DB" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$DB" >/dev/null <<EOF
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10, 2) NOT NULL);
INSERT INTO items SELECT i, 'item ' || i, round((1 + (i * 7919) % 10000 / 100.0)::numeric, 2)
FROM generate_series(1, $ITEMS) AS i;
VACUUM ANALYZE items;
EOF

# pg_cpu_us — CPU of the postmaster and of every PostgreSQL process it has reaped
# (utime + stime + cutime + cstime, fields 14-17 of /proc/PID/stat), in µs
pg_cpu_us() {
    local stat rest hz
    stat="$(<"/proc/$PG_MAIN_PID/stat")" || return 1
    rest="${stat##*) }"
    local -a f
    read -r -a f <<<"$rest"
    hz="$(getconf CLK_TCK)"
    echo $(((f[11] + f[12] + f[13] + f[14]) * 1000000 / hz))
}
# db_counters — "xact_commit xact_rollback tup_returned" of the benchmark database
db_counters() {
    admin_psql -F ' ' -c "SELECT xact_commit, xact_rollback, tup_returned FROM pg_stat_database WHERE datname = '$DB'"
}
# backends_gone — wait until the benchmark database has no backend left (each flushes its
# statistics as it exits), then a little longer for the last flush
backends_gone() {
    local i n=""
    for ((i = 0; i < 100; i++)); do
        n="$(admin_psql -c "SELECT count(*) FROM pg_stat_activity WHERE datname = '$DB'")"
        [[ "$n" == 0 ]] && break
        sleep 0.1
    done
    [[ "$n" == 0 ]] || log "warning: $n backends of database $DB still there after 10 s"
    sleep 0.3
}
# activity_sample FILE — pid and state_change of the benchmark database's backends
activity_sample() {
    admin_psql -F ' ' -c "SELECT pid, state_change FROM pg_stat_activity WHERE datname = '$DB' AND backend_type = 'client backend' ORDER BY pid" >"$1" 2>/dev/null || true
}

# ---------------------------------------------------------------- pgward
RULE=items-by-id
declare -A PORT=()
PORT[direct]="$PG_PORT"
PORT[read]="$PG_PORT"
PGWARD_PID=""
PGWARD_ADMIN=""
if ((USE_PGWARD)); then
    cat >"$WORK/rules.toml" <<EOF
# every transaction of bench/hits.sh's hit targets after the first is a hit
[[rule]]
name = "$RULE"
match.query = "SELECT id, name, price FROM items WHERE id = 1"
cache.ttl = "1h"
cache.invalidate = "ttl"
EOF
    "$PGWARD" check "$WORK/rules.toml" >"$WORK/rules-check.log" 2>&1 \
        || { cat "$WORK/rules-check.log" >&2; die "pgward does not accept the rules file"; }
    PORT[hit]="$(free_port)"
    PORT[hit100]="${PORT[hit]}"
    PGWARD_ADMIN="127.0.0.1:$(free_port)"
    cat >"$WORK/pgward.toml" <<EOF
listen = '127.0.0.1:${PORT[hit]}'
shutdown_timeout = '2s'
rules = '$WORK/rules.toml'
[upstream]
address = '127.0.0.1:$PG_PORT'
tls = 'disable'
[admin]
listen = '$PGWARD_ADMIN'
EOF
    log "pgward: $PGWARD --config $WORK/pgward.toml (listen ${PORT[hit]}, admin $PGWARD_ADMIN)"
    bg_start "$WORK/pgward.log" "$PGWARD" --config "$WORK/pgward.toml"
    PGWARD_PID="$BG_PID"
    for ((i = 0; i < 300; i++)); do
        psql -X -q -h 127.0.0.1 -p "${PORT[hit]}" -U postgres -d "$DB" -Atc 'select 1' >/dev/null 2>&1 && break
        kill -0 "$PGWARD_PID" 2>/dev/null || { tail -n 30 "$WORK/pgward.log" >&2; die "pgward exited during start-up"; }
        sleep 0.1
    done
    ((i < 300)) || { tail -n 30 "$WORK/pgward.log" >&2; die "pgward did not answer on ${PORT[hit]} within 30 s"; }
fi

# pgward_stats RESET|READ FILE — POST /stats/reset, or GET /stats/queries saved to FILE
pgward_stats() {
    python3 - "$1" "http://$PGWARD_ADMIN" "${2:-}" <<'EOF'
import sys, urllib.request
what, base, path = sys.argv[1], sys.argv[2], sys.argv[3]
if what == "RESET":
    # no body: a form-encoded one is refused as cross-site (docs/security.md)
    req = urllib.request.Request(base + "/stats/reset", method="POST")
    urllib.request.urlopen(req, timeout=10).read()
else:
    body = urllib.request.urlopen(base + "/stats/queries?sort=calls&limit=50", timeout=10).read()
    open(path, "wb").write(body)
EOF
}
# stats_fields FILE — "calls cache_hits cache_misses p50_us p99_us max_us upstream_connections
# queries" of the rule's fingerprint in a /stats/queries snapshot ("-" when absent)
stats_fields() {
    python3 - "$1" "$RULE" <<'EOF'
import json, sys
snap = json.load(open(sys.argv[1]))
rows = [q for q in snap.get("queries", []) if q.get("rule") == sys.argv[2]]
def us(v):
    return "%.1f" % (v * 1000.0)
out = ["-"] * 6
if rows:
    q = max(rows, key=lambda r: r.get("calls", 0))
    out = [str(q.get("calls", 0)), str(q.get("cache_hits", 0)), str(q.get("cache_misses", 0)),
           us(q.get("p50_exec_time", 0)), us(q.get("p99_exec_time", 0)), us(q.get("max_exec_time", 0))]
proxy = snap.get("proxy", {})
out += [str(proxy.get("upstream_connections_total", "-")), str(proxy.get("queries", "-"))]
print(" ".join(out))
EOF
}

# ---------------------------------------------------------------- scripts, warm-up
printf 'SELECT 1;\n' >"$WORK/direct.sql"
ITEMS_SQL='SELECT id, name, price FROM items WHERE id = :id;'
printf '\\set id 42\n%s\n' "$ITEMS_SQL" >"$WORK/hit.sql"
printf '\\set id random(1, 100)\n%s\n' "$ITEMS_SQL" >"$WORK/hit100.sql"
cp "$WORK/hit100.sql" "$WORK/read.sql"

pgb_tps() { sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$1" | head -n 1; }
pgb_lat() { sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$1" | head -n 1; }
pgb_tx() { sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$1" | head -n 1; }
# client_pct PREFIX — "p50 p99" in µs of the latencies in pgbench's logs PREFIX.* (column 3)
client_pct() {
    compgen -G "$1.*" >/dev/null || { echo "- -"; return 0; }
    cat "$1".* | awk '{ print $3 }' | sort -n |
        awk '{ v[NR] = $1 } END { if (NR == 0) { print "- -"; exit } i = int(NR * 0.5 + 0.5); j = int(NR * 0.99 + 0.5); if (i < 1) i = 1; if (j < 1) j = 1; print v[i], v[j] }'
}
pgb_failed() { sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$1" | head -n 1; }

# the first transactions fill the cache: one entry for hit, 100 for hit100 (each key in each
# protocol's shape); WARMUP_TX random draws leave an id of 1..100 out with odds 100 * 0.99^N
for mode in "${modes[@]}"; do
    for t in "${targets[@]}"; do
        run_killable pgbench -n -M "$mode" -f "$WORK/$t.sql" -c 1 -t "$WARMUP_TX" \
            -h 127.0.0.1 -p "${PORT[$t]}" -U postgres "$DB" >"$WORK/warmup-$mode-$t.log" 2>&1 \
            || { tail -n 20 "$WORK/warmup-$mode-$t.log" >&2; die "warm-up of $t ($mode) failed"; }
    done
done
log "warm-up done: ${WARMUP_TX} transactions per target and mode"

# ---------------------------------------------------------------- cells
declare -A TPSL=() CP50L=() CP99L=() LATL=() CPUL=() PGCPUL=() P50L=() P99L=()
declare -A S_TX=() S_CALLS=() S_HITS=() S_MISS=() S_UP=() S_XACT=() S_TUP=() S_SAMPLED=() S_MOVED=()
FAILED=0
echo "label,run_ts,mode,clients,jobs,duration_s,target,round,order_pos,tps,latency_us,client_p50_us,client_p99_us,transactions,failed_tx,pgward_cpu_us,pgward_cpu_us_per_tx,pg_cpu_us,pg_cpu_us_per_tx,d_xact_commit,d_xact_rollback,d_tup_returned,pgward_calls,cache_hits,cache_misses,hit_p50_us,hit_p99_us,hit_max_us,upstream_connections,pgward_queries,backends_sampled,state_change_moved,pgbench_rc" >"$CSV"

median() {
    (($#)) || return 0
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
per_tx() { # per_tx TOTAL TX
    if [[ -n "$1" && -n "$2" ]] && (($2 > 0)); then awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; fi
}
add() { # add ARRAY_KEY VALUE — sum into S_<name>[key] unless VALUE is empty or "-"
    local -n _sums="$1"
    [[ -z "$3" || "$3" == - ]] && return 0
    _sums[$2]=$((${_sums[$2]:-0} + $3))
}
# moved FILE1 FILE2 — "backends seen in both samples, of which state_change moved"
moved() {
    awk 'NR == FNR { a[$1] = $2 " " $3; next } ($1 in a) { n++; if (a[$1] != $2 " " $3) m++ } END { printf "%d %d\n", n, m }' "$1" "$2"
}

# when the activity samples are taken: early (after the connections are up) and late
T_EARLY="$(awk -v d="$DURATION" 'BEGIN { printf "%.2f", (d < 3 ? d * 0.3 : 1) }')"
T_LATE="$(awk -v d="$DURATION" -v e="$T_EARLY" 'BEGIN { printf "%.2f", (d < 3 ? d * 0.4 : d - 1.5 - e) }')"

ncells=$((${#modes[@]} * ${#clients_list[@]}))
est=$((ncells * ${#targets[@]} * ROUNDS * (DURATION + 2)))
log "running $ncells cells x ${#targets[@]} targets x $ROUNDS rounds x ${DURATION}s (~$((est / 60))m$((est % 60))s)"
log "load before: $LOAD_BEFORE"

cell=0
settled=0
for mode in "${modes[@]}"; do
    for c in "${clients_list[@]}"; do
        j=$((JOBS < c ? JOBS : c))
        n=${#targets[@]}
        for ((round = 1; round <= ROUNDS; round++)); do
            order=()
            for ((k = 0; k < n; k++)); do order+=("${targets[$(((k + cell + round - 1) % n))]}"); done
            pos=0
            for t in "${order[@]}"; do
                pos=$((pos + 1))
                key="$mode,$c,$t"
                out="$WORK/cell-$mode-c$c-$t-r$round.log"
                rc=0 cpu="" cputx="" pgcpu="" pgcputx=""
                f=(- - - - - - - -)
                if is_pgward "$t"; then
                    if ! kill -0 "$PGWARD_PID" 2>/dev/null; then
                        log "pgward is no longer running; skipping $mode c=$c $t"
                        FAILED=1
                        printf '%s\n' "$(csv_field "$LABEL"),$RUN_TS,$mode,$c,$j,$DURATION,$t,$round,$pos,,,,,,,,,,,,,,,,,,,,,,,,dead" >>"$CSV"
                        continue
                    fi
                    pgward_stats RESET
                fi
                # the previous cell's backends are gone already (waited for after it)
                ((settled)) || backends_gone
                settled=0
                read -r x0 r0 tup0 <<<"$(db_counters)"
                pg0="$(pg_cpu_us)"
                cpu0=""
                is_pgward "$t" && cpu0="$(proc_cpu_us "$PGWARD_PID")"
                (
                    sleep "$T_EARLY"
                    activity_sample "$out.act1"
                    sleep "$T_LATE"
                    activity_sample "$out.act2"
                ) &
                sampler=$!
                register_pid "$sampler"
                txlog=()
                ((c == j)) && txlog=(-l --sampling-rate "$SAMPLING" --log-prefix "$out.tx")
                run_killable pgbench -n -M "$mode" -f "$WORK/$t.sql" -c "$c" -j "$j" -T "$DURATION" \
                    "${txlog[@]}" -h 127.0.0.1 -p "${PORT[$t]}" -U postgres "$DB" >"$out" 2>&1 || rc=$?
                read -r cp50 cp99 <<<"$(client_pct "$out.tx")"
                rm -f "$out".tx.*
                cpu1=""
                is_pgward "$t" && cpu1="$(proc_cpu_us "$PGWARD_PID" 2>/dev/null || true)"
                wait "$sampler" || true
                backends_gone
                settled=1
                pg1="$(pg_cpu_us)"
                read -r x1 r1 tup1 <<<"$(db_counters)"
                if is_pgward "$t"; then
                    pgward_stats READ "$out.stats.json" || log "could not read pgward's /stats/queries"
                    [[ -s "$out.stats.json" ]] && read -r -a f <<<"$(stats_fields "$out.stats.json")"
                fi
                tps="$(pgb_tps "$out")" lat="$(pgb_lat "$out")" tx="$(pgb_tx "$out")" failed="$(pgb_failed "$out")"
                latus=""
                [[ -n "$lat" ]] && latus="$(awk -v l="$lat" 'BEGIN { printf "%.1f", l * 1000 }')"
                if ((rc != 0)) || [[ -z "$tps" ]]; then
                    log "pgbench against $t ($mode c=$c) failed (rc=$rc):"
                    tail -n 5 "$out" >&2 || true
                    FAILED=1
                fi
                if [[ -n "$cpu0" && -n "$cpu1" ]]; then
                    cpu=$((cpu1 - cpu0))
                    cputx="$(per_tx "$cpu" "$tx")"
                fi
                pgcpu=$((pg1 - pg0))
                pgcputx="$(per_tx "$pgcpu" "$tx")"
                dx=$((x1 - x0)) dr=$((r1 - r0)) dtup=$((tup1 - tup0))
                read -r sampled moved_n <<<"$(moved "$out.act1" "$out.act2" 2>/dev/null || echo '0 0')"
                TPSL[$key]+="${tps:+ $tps}"
                if [[ "$cp50" != - ]]; then CP50L[$key]+=" $cp50" CP99L[$key]+=" $cp99"; fi
                LATL[$key]+="${latus:+ $latus}"
                CPUL[$key]+="${cputx:+ $cputx}"
                PGCPUL[$key]+="${pgcputx:+ $pgcputx}"
                if [[ "${f[3]}" != - ]]; then P50L[$key]+=" ${f[3]}" P99L[$key]+=" ${f[4]}"; fi
                add S_TX "$key" "$tx"
                add S_CALLS "$key" "${f[0]}"
                add S_HITS "$key" "${f[1]}"
                add S_MISS "$key" "${f[2]}"
                add S_UP "$key" "${f[6]}"
                add S_XACT "$key" "$dx"
                add S_TUP "$key" "$dtup"
                add S_SAMPLED "$key" "$sampled"
                add S_MOVED "$key" "$moved_n"
                printf '%s\n' "$(csv_field "$LABEL"),$RUN_TS,$mode,$c,$j,$DURATION,$t,$round,$pos,$tps,$latus,$cp50,$cp99,$tx,$failed,$cpu,$cputx,$pgcpu,$pgcputx,$dx,$dr,$dtup,${f[0]},${f[1]},${f[2]},${f[3]},${f[4]},${f[5]},${f[6]},${f[7]},$sampled,$moved_n,$rc" >>"$CSV"
                log "$(printf '%-8s c=%-3s r%-2s %-7s tps=%-9s lat=%-7s µs p50=%-5s µs pgward cpu/tx=%-6s pg cpu/tx=%-7s Δxact=%-7s hits=%-8s misses=%-3s state_change moved %s/%s' \
                    "$mode" "$c" "$round" "$t" "${tps:-NA}" "${latus:-NA}" "$cp50" "${cputx:--}" "${pgcputx:--}" "$dx" "${f[1]}" "${f[2]}" "$moved_n" "$sampled")"
            done
        done
        cell=$((cell + 1))
    done
done
LOAD_AFTER="$(uptime)"
log "load after: $LOAD_AFTER"
if ((USE_PGWARD)); then
    pgward_stats READ "$WORK/final-stats.json" 2>/dev/null || true
    python3 - "http://$PGWARD_ADMIN/cache" "$WORK/final-cache.json" <<'EOF' || true
import sys, urllib.request
open(sys.argv[2], "wb").write(urllib.request.urlopen(sys.argv[1], timeout=10).read())
EOF
    cp "$WORK/final-cache.json" "$RESULTS_DIR/hits-$RUN_TS-cache.json" 2>/dev/null || true
fi

# ---------------------------------------------------------------- tables
fmt_num() { # fmt_num VALUE DECIMALS
    if [[ -z "$1" ]]; then printf -- '-'; else awk -v v="$1" -v d="$2" 'BEGIN { printf "%.*f", d, v }'; fi
}
ratio() {
    if [[ -z "$1" || -z "$2" ]]; then printf -- '-'; else awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; fi
}
med() { # med ARRAY KEY
    local -n _lists="$1"
    # shellcheck disable=SC2086 # word splitting of the value list is intended
    median ${_lists[$2]:-}
}

rev="$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
git -C "$REPO_ROOT" diff --quiet HEAD 2>/dev/null || rev+="+dirty"
versions="PostgreSQL $(postgres --version | awk '{ print $3; exit }'), pgbench $(pgbench --version | awk '{ print $3; exit }')"
((USE_PGWARD)) && versions+="; pgward $rev"
others=()
for t in "${targets[@]}"; do [[ "$t" != direct ]] && others+=("$t"); done

{
    echo "### pgward cache hits vs direct SELECT 1${LABEL:+ — $LABEL} ($RUN_TS)"
    echo
    echo "\`bench/hits.sh\`: pgbench -n -M {$(
        IFS=,
        echo "${modes[*]}"
    )}, -T $DURATION per cell, -j min($JOBS, clients), $(nproc) CPUs; $versions."
    echo "Medians of $ROUNDS round(s) per cell, targets interleaved in a rotated order. direct = PostgreSQL"
    echo "running \`SELECT 1\`; hit = pgward answering \`SELECT id, name, price FROM items WHERE id = 42\`"
    echo "from its cache; hit100 = the same with id random(1, 100); read = PostgreSQL running that query."
    echo "Load (uptime) before: ${LOAD_BEFORE#*load average: }; after: ${LOAD_AFTER#*load average: }."
    echo
    hdr="| mode | clients"
    sep="|---|---:"
    for t in "${targets[@]}"; do hdr+=" | TPS $t" sep+="|---:"; done
    if has_target direct; then
        for t in "${others[@]}"; do hdr+=" | $t ÷ direct" sep+="|---:"; done
    fi
    for t in "${targets[@]}"; do hdr+=" | p50 µs $t" sep+="|---:"; done
    echo "$hdr |"
    echo "$sep|"
    for mode in "${modes[@]}"; do
        for c in "${clients_list[@]}"; do
            row="| $mode | $c"
            for t in "${targets[@]}"; do row+=" | $(fmt_num "$(med TPSL "$mode,$c,$t")" 0)"; done
            if has_target direct; then
                td="$(med TPSL "$mode,$c,direct")"
                for t in "${others[@]}"; do row+=" | $(ratio "$(med TPSL "$mode,$c,$t")" "$td")"; done
            fi
            for t in "${targets[@]}"; do row+=" | $(fmt_num "$(med CP50L "$mode,$c,$t")" 0)"; done
            echo "$row |"
        done
    done
    echo
    echo "Per target: mean latency (pgbench's average), client-side p50 / p99 latency (pgbench's log,"
    echo "sampling $SAMPLING of the transactions; only with one client per pgbench thread, whose clock"
    echo "is read per result), pgward CPU per transaction, PostgreSQL CPU per"
    echo "transaction (postmaster + exited backends; includes the cell's connection start-ups), and the"
    echo "latency pgward's statistics record for the hits (p50 / p99 of the items fingerprint)."
    echo
    echo "| mode | clients | target | TPS | mean µs | p50 µs | p99 µs | pgward CPU µs/tx | PG CPU µs/tx | pgward-recorded p50 / p99 µs |"
    echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    for mode in "${modes[@]}"; do
        for c in "${clients_list[@]}"; do
            for t in "${targets[@]}"; do
                k="$mode,$c,$t"
                rec="-"
                if is_pgward "$t"; then
                    rec="$(fmt_num "$(med P50L "$k")" 1) / $(fmt_num "$(med P99L "$k")" 1)"
                fi
                printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$mode" "$c" "$t" \
                    "$(fmt_num "$(med TPSL "$k")" 0)" "$(fmt_num "$(med LATL "$k")" 1)" \
                    "$(fmt_num "$(med CP50L "$k")" 0)" "$(fmt_num "$(med CP99L "$k")" 0)" \
                    "$(fmt_num "$(med CPUL "$k")" 1)" "$(fmt_num "$(med PGCPUL "$k")" 1)" "$rec"
            done
        done
    done
    echo
    echo "What reached PostgreSQL, summed over the $ROUNDS round(s) of each cell: transactions pgbench"
    echo "completed; pgward's calls, cache hits and misses of the items fingerprint and the upstream"
    echo "connections it opened (its statistics reset before each cell); Δ xact_commit and Δ tup_returned"
    echo "of the benchmark database (pg_stat_database, read after the cell's backends exited); the"
    echo "database's backends seen in both pg_stat_activity samples (${T_EARLY} s into the cell and"
    echo "${T_LATE} s later) and how many of them had a new state_change."
    echo
    echo "| mode | clients | target | transactions | pgward calls | cache hits | cache misses | upstream connections | Δ xact_commit | Δ tup_returned | backends sampled | state_change moved |"
    echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for mode in "${modes[@]}"; do
        for c in "${clients_list[@]}"; do
            for t in "${targets[@]}"; do
                k="$mode,$c,$t"
                if is_pgward "$t"; then
                    pw="${S_CALLS[$k]:--} | ${S_HITS[$k]:--} | ${S_MISS[$k]:--} | ${S_UP[$k]:--}"
                else
                    pw="- | - | - | -"
                fi
                echo "| $mode | $c | $t | ${S_TX[$k]:--} | $pw | ${S_XACT[$k]:--} | ${S_TUP[$k]:--} | ${S_SAMPLED[$k]:--} | ${S_MOVED[$k]:--} |"
            done
        done
    done
} | tee "$MD"

echo
echo "raw CSV: ${CSV#"$REPO_ROOT"/}   tables: ${MD#"$REPO_ROOT"/}"

if ((FAILED)); then
    log "some cells failed (see above)"
    exit 1
fi
_bench_ok=1
