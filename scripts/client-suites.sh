#!/usr/bin/env bash
# scripts/client-suites.sh — runs psycopg 3's own test suite (from its PyPI sdist) against a
# throwaway PostgreSQL directly and then through pgward, and prints pass/fail counts side by
# side. Not part of CI (network, minutes of runtime). See docs/client-suites.md.
#   bash scripts/client-suites.sh [extra pytest args, e.g. -k cursor]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib/test-deps.sh
ensure_test_deps >/dev/null

work="$(mktemp -d /tmp/pgward-client-suites.XXXXXX)"
chmod 755 "$work"
pg_port=$((20000 + RANDOM % 20000))
ward_port=$((pg_port + 1))
as_pg() { if [[ "$(id -u)" -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
    [[ -n "${ward_pid:-}" ]] && kill "$ward_pid" 2>/dev/null || true
    as_pg pg_ctl -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

[[ "$(id -u)" -eq 0 ]] && chown postgres "$work"
as_pg initdb -D "$work/data" -U postgres --auth=trust --no-sync >/dev/null
as_pg pg_ctl -D "$work/data" -l "$work/postgres.log" -w \
    -o "-p $pg_port -k $work -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null

cargo build --release --quiet
cat >"$work/pgward.toml" <<TOML
listen = "127.0.0.1:$ward_port"
[upstream]
address = "127.0.0.1:$pg_port"
tls = "disable"
[admin]
listen = ""
TOML
target/release/pgward --config "$work/pgward.toml" >"$work/pgward.log" 2>&1 &
ward_pid=$!

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet "psycopg[binary,test]"
version="$("$work/venv/bin/python" -c 'import psycopg; print(psycopg.__version__)')"
(cd "$work" && "$work/venv/bin/pip" download --quiet --no-deps --no-binary :all: "psycopg==$version" &&
    tar xzf psycopg-"$version".tar.gz)
src="$work/psycopg-$version"
[[ -d "$src/tests" ]] || { echo "client-suites: the psycopg $version sdist has no tests/" >&2; exit 1; }

run_suite() { # label dsn -> prints the pytest summary line
    (cd "$src" && "$work/venv/bin/python" -m pytest -q -p no:randomly --test-dsn "$2" "${@:3}" tests \
        >"$work/pytest-$1.log" 2>&1) || true
    tail -n 1 "$work/pytest-$1.log"
}
direct="$(run_suite direct "host=127.0.0.1 port=$pg_port user=postgres dbname=postgres" "$@")"
proxied="$(run_suite pgward "host=127.0.0.1 port=$ward_port user=postgres dbname=postgres" "$@")"
printf 'psycopg %s test suite\n  direct : %s\n  pgward : %s\nlogs: %s\n' "$version" "$direct" "$proxied" "$work"
