#!/usr/bin/env bash
# scripts/client-suites.sh — runs psycopg2's own test suite (from its PyPI sdist) against a
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

# psycopg 3's PyPI sdist ships no tests/; psycopg2's does, so its suite is the one run here.
as_pg createdb -h "$work" -p "$pg_port" -U postgres psycopg2_test
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet psycopg2-binary
version="$("$work/venv/bin/python" -c 'import psycopg2; print(psycopg2.__version__.split()[0])')"
(cd "$work" && "$work/venv/bin/pip" download --quiet --no-deps --no-binary :all: "psycopg2==$version" &&
    tar xzf psycopg2-"$version".tar.gz)
src="$work/psycopg2-$version"
[[ -d "$src/tests" ]] || { echo "client-suites: the psycopg2 $version sdist has no tests/" >&2; exit 1; }

run_suite() { # label port -> prints unittest's summary lines
    (cd "$src" && PSYCOPG2_TESTDB=psycopg2_test PSYCOPG2_TESTDB_HOST=127.0.0.1 \
        PSYCOPG2_TESTDB_PORT="$2" PSYCOPG2_TESTDB_USER=postgres \
        timeout 600 "$work/venv/bin/python" -c "import tests, unittest; unittest.main(module=None, defaultTest='tests.test_suite')" \
        >"$work/unittest-$1.log" 2>&1) || true
    grep -E '^(Ran |OK|FAILED)' "$work/unittest-$1.log" | tr '\n' ' '
}
direct="$(run_suite direct "$pg_port")"
proxied="$(run_suite pgward "$ward_port")"
printf 'psycopg2 %s test suite\n  direct : %s\n  pgward : %s\nlogs: %s\n' "$version" "$direct" "$proxied" "$work"
