# scripts/lib/test-deps.sh — sourced by scripts/test.sh and .ci/run. Owns what the test
# suite needs from the system (PostgreSQL server binaries, openssl, chromium, promtool): finds them,
# installs the missing ones with apt-get -y when root, and otherwise says what to install.
# Defines functions only; callers choose set -e and error reporting.

# Prints the message and fails; callers decide whether that ends the script.
test_deps_fail() {
    echo "test-deps: ERROR: $*" >&2
    return 1
}

TEST_DEPS_APT_UPDATED=0
# apt_install PKG... — root only: a non-root caller gets the package list to install itself.
apt_install() {
    if [[ "$(id -u)" -ne 0 ]]; then
        test_deps_fail "not root, cannot install: $* (run as root: apt-get install -y $*)"
        return 1
    fi
    command -v apt-get >/dev/null 2>&1 || { test_deps_fail "apt-get not found; install by hand: $*"; return 1; }
    if [[ "$TEST_DEPS_APT_UPDATED" -eq 0 ]]; then
        env DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
        TEST_DEPS_APT_UPDATED=1
    fi
    env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" </dev/null
}

# find_pg_bin — newest /usr/lib/postgresql/N/bin with initdb, else the one in PATH.
find_pg_bin() {
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
    if [[ -z "$best" ]] && command -v initdb >/dev/null 2>&1; then
        best="$(dirname "$(command -v initdb)")"
    fi
    [[ -n "$best" ]] && printf '%s\n' "$best"
}

# ensure_test_deps — installs what is missing (as root) or lists it and fails (not root);
# on success PATH starts with the newest PostgreSQL bin directory and PG_BIN names it.
ensure_test_deps() {
    local missing=()
    find_pg_bin >/dev/null || missing+=(postgresql)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    # tests/it/dashboard.rs renders the admin dashboard in headless Chromium
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    # tests/it/metrics.rs runs `promtool check metrics` on a live /metrics (Debian ships
    # promtool in the prometheus package; the server it also installs is not started)
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
    if ((${#missing[@]} > 0)); then
        if [[ "$(id -u)" -ne 0 ]]; then
            test_deps_fail "the test suite needs: ${missing[*]}." \
                "Install them as root, e.g.: sudo apt-get install -y ${missing[*]}"
            return 1
        fi
        echo "test-deps: installing ${missing[*]}"
        apt_install "${missing[@]}" || return 1
    fi
    PG_BIN="$(find_pg_bin)" || { test_deps_fail "initdb still not found after installing postgresql"; return 1; }
    export PG_BIN
    export PATH="$PG_BIN:$PATH"
    echo "postgres binaries: $PG_BIN ($("$PG_BIN/postgres" --version))"
    echo "openssl: $(openssl version)"
    echo "chromium: $(chromium --version 2>/dev/null)"
    echo "promtool: $(promtool --version 2>&1 | head -n 1)"
}
