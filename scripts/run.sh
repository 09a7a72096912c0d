#!/usr/bin/env bash
# scripts/run.sh — build pgward (release) and run it.
#
# Without --upstream/--config (or PGWARD_CONFIG): the demo. It starts a throwaway
# local PostgreSQL (the system's PostgreSQL packages; Debian package `postgresql`,
# installed with apt-get when missing and running as root), loads the shop schema
# and data (bench/shop.sql), starts pgward on 127.0.0.1:6432 with the repo's
# rules.toml and the admin endpoint on 127.0.0.1:6480, and runs a light background
# load (the recommendation query and checkouts) so /stats shows budgets, caps and
# cache hits. Ctrl-C stops and removes everything it started.
#
# With --upstream HOST:PORT or --config FILE (or PGWARD_CONFIG): runs pgward with
# those flags only, in front of that PostgreSQL. Any arguments go to pgward.
# --upstream without --config loads no rules (pgward relays and fingerprints only);
# rules come from a config file naming them: --config pgward.toml with rules = "...".
#
# Needs Rust (cargo; https://rustup.rs) and, for the demo, the PostgreSQL server and
# client packages. The first build compiles pgward and every dependency (release
# mode), the demo's load generator (examples/pgload.rs) too; later runs rebuild only
# what changed.
#
# Environment (demo):
#   DEMO_SCALE       shop data size, 1 = ~1M order items (default 1; loads in seconds)
#   DEMO_LOAD_SECS   seconds of background load, 0 = none (default 600)
#   DEMO_RECO_RATE   recommendation queries per second (default 20)
#   DEMO_CHECKOUT_RATE  checkouts per second (default 2)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT="$(pwd)"
# shellcheck source=../bench/lib.sh
source bench/lib.sh

args=("$@")
configured=0
has_config=0
for a in "$@"; do
    case "$a" in
        --upstream | --upstream=*) configured=1 ;;
        --config | --config=* | -c) configured=1 has_config=1 ;;
        -h | --help)
            # Help never builds: the flags from the binary when one is built, else listed here.
            sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
            echo
            if [[ -x target/release/pgward ]]; then
                echo "pgward's own flags (target/release/pgward --help):"
                target/release/pgward --help
            else
                echo "pgward's own flags (not built yet; target/release/pgward --help once built):"
                echo "  -c, --config FILE        config file (TOML); without one, defaults and no rules"
                echo "      --listen ADDR        address for clients (default 127.0.0.1:6432)"
                echo "      --upstream HOST:PORT PostgreSQL to guard (default 127.0.0.1:5432)"
                echo "      --admin-listen ADDR  admin HTTP address, \"\" to disable (default 127.0.0.1:6480)"
            fi
            exit 0
            ;;
    esac
done
[[ -n "${PGWARD_CONFIG:-}" ]] && configured=1 has_config=1

command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust with rustup (https://rustup.rs), then open a new shell"
if [[ -x target/release/pgward ]]; then
    log "cargo build --release (rebuilds only what changed)"
else
    log "cargo build --release: the first build compiles pgward and all its dependencies; cargo shows its progress below"
fi
# Not --quiet: cargo's progress (a bar on a terminal, Compiling lines otherwise) instead of silence.
cargo build --release
PGWARD="$REPO_ROOT/target/release/pgward"

if ((configured)); then
    ((has_config)) || log "no --config: pgward runs without rules (relays and fingerprints only); rules need a config file with rules = \"rules.toml\""
    log "pgward ${args[*]} (Ctrl-C stops)"
    run_killable "$PGWARD" "${args[@]}"
    exit $?
fi

# ---------------------------------------------------------------- demo
DEMO_SCALE="${DEMO_SCALE:-1}"
DEMO_LOAD_SECS="${DEMO_LOAD_SECS:-600}"
DEMO_RECO_RATE="${DEMO_RECO_RATE:-20}"
DEMO_CHECKOUT_RATE="${DEMO_CHECKOUT_RATE:-2}"
LISTEN=127.0.0.1:6432
ADMIN=127.0.0.1:6480

# the PostgreSQL server and client tools (Debian package postgresql; installed when
# missing and we are root)
pg_bin_dir >/dev/null 2>&1 \
    || ((EUID == 0)) \
    || die "no PostgreSQL server binaries (initdb, pg_ctl): install the Debian package 'postgresql' (sudo apt-get install postgresql), or run pgward in front of your own server: bash scripts/run.sh --upstream HOST:PORT"
ensure_pg_server
PGBIN="$(pg_bin_dir)"
export PATH="$PGBIN:$PATH"
for tool in psql pgbench; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found: install the Debian package 'postgresql-client'"
done
# the demo load's generator (examples/pgload.rs), built before anything starts
if ((DEMO_LOAD_SECS > 0)); then
    build_pgload
fi

for addr in "$LISTEN" "$ADMIN"; do
    if (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null; then
        die "$addr is already in use (another pgward?); stop it, or run pgward yourself: bash scripts/run.sh --upstream HOST:PORT --listen ADDR --admin-listen ADDR"
    fi
done

demo_dir="$(mktemp -d "${TMPDIR:-/tmp}/pgward-demo.XXXXXX")"
chmod 755 "$demo_dir"
on_exit "rm -rf '$demo_dir'"
on_exit "log 'demo stopped; throwaway PostgreSQL and $demo_dir removed'"
port="$(free_port)"
log "starting a throwaway PostgreSQL on 127.0.0.1:$port (removed on exit)"
pg_start "$demo_dir/pg" "$port"
psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c 'CREATE DATABASE shop' >/dev/null
log "loading the shop schema and data (bench/shop.sql, scale $DEMO_SCALE)"
t0=$SECONDS
psql -X -q -v ON_ERROR_STOP=1 -v scale="$DEMO_SCALE" -h 127.0.0.1 -p "$port" -U postgres -d shop \
    -f bench/shop.sql >"$demo_dir/shop-load.log" 2>&1 \
    || { tail -n 20 "$demo_dir/shop-load.log" >&2; die "loading bench/shop.sql failed"; }
log "shop loaded in $((SECONDS - t0))s: $(psql -X -At -h 127.0.0.1 -p "$port" -U postgres -d shop -c \
    "SELECT format('%s products, %s customers, %s orders, %s order items', (SELECT count(*) FROM products), (SELECT count(*) FROM customers), (SELECT count(*) FROM orders), (SELECT count(*) FROM order_items))")"

cat >"$demo_dir/pgward.toml" <<EOF
# written by scripts/run.sh (demo)
listen = "$LISTEN"
rules = "$REPO_ROOT/rules.toml"
shutdown_timeout = "2s"

[upstream]
address = "127.0.0.1:$port"
tls = "disable"

[admin]
listen = "$ADMIN"
EOF
log "pgward --config $demo_dir/pgward.toml ${args[*]}"
bg_start "$demo_dir/pgward.log" "$PGWARD" --config "$demo_dir/pgward.toml" "${args[@]}"
pgward_pid="$BG_PID"
# pgward's log goes to the terminal as well
tail -n +1 -f "$demo_dir/pgward.log" --pid "$pgward_pid" >&2 &
register_pid $!
for ((i = 0; i < 300; i++)); do
    psql -X -q -h 127.0.0.1 -p "${LISTEN##*:}" -U postgres -d shop -Atc 'select 1' >/dev/null 2>&1 && break
    kill -0 "$pgward_pid" 2>/dev/null || die "pgward exited (see its log above)"
    sleep 0.1
done
((i < 300)) || die "pgward did not answer on $LISTEN within 30s"

if ((DEMO_LOAD_SECS > 0)); then
    log "background load for ${DEMO_LOAD_SECS}s: ${DEMO_RECO_RATE} recommendation queries/s, ${DEMO_CHECKOUT_RATE} checkouts/s"
    bg_start "$demo_dir/load-reco.log" "$PGLOAD" --conn "host=127.0.0.1 port=${LISTEN##*:} user=postgres dbname=shop" \
        -w "name=demo-reco,script=bench/reco.sql,clients=8,rate=$DEMO_RECO_RATE" --duration "$DEMO_LOAD_SECS"
    bg_start "$demo_dir/load-checkout.log" pgbench -n -f bench/checkout.sql -c 2 -j 1 -R "$DEMO_CHECKOUT_RATE" \
        -T "$DEMO_LOAD_SECS" -h 127.0.0.1 -p "${LISTEN##*:}" -U postgres shop
fi

cat >&2 <<EOF

  pgward is running on $LISTEN in front of a throwaway PostgreSQL (127.0.0.1:$port)
  with the rules in rules.toml (edit it: pgward reloads it).

  Connect:      psql "host=127.0.0.1 port=${LISTEN##*:} user=postgres dbname=shop"
  Try:          SELECT p.product_id, p.name FROM order_items a
                JOIN order_items b ON b.order_id = a.order_id AND b.product_id <> a.product_id
                JOIN products p ON p.product_id = b.product_id
                WHERE a.product_id = 42 GROUP BY p.product_id, p.name ORDER BY count(*) DESC LIMIT 10;
  Look:         http://$ADMIN/                      dashboard
                curl -s 'http://$ADMIN/stats/queries?sort=total_exec_time&limit=5' | jq
                curl -s http://$ADMIN/rules | jq        rules in force, per-rule counts
                curl -s http://$ADMIN/cache | jq        result cache
                curl -s http://$ADMIN/metrics           Prometheus
  Load:         $( ((DEMO_LOAD_SECS > 0)) && echo "${DEMO_RECO_RATE} recommendation queries/s and ${DEMO_CHECKOUT_RATE} checkouts/s for ${DEMO_LOAD_SECS}s (DEMO_LOAD_SECS)" || echo "none (DEMO_LOAD_SECS=0)")

  Ctrl-C stops pgward, the load and PostgreSQL, and removes $demo_dir.

EOF
rc=0
wait "$pgward_pid" || rc=$?
log "pgward exited (status $rc)"
exit "$rc"
