#!/usr/bin/env bash
# scripts/test.sh — the test command (README "Run the tests", .ci/run's TEST_CMD).
# Installs what the suite needs when missing (root: apt-get -y; otherwise says what to
# install and exits non-zero), puts the newest PostgreSQL bin directory on PATH, then runs
# `cargo test --all-targets` with any extra arguments passed through.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=lib/test-deps.sh
source scripts/lib/test-deps.sh
if ! command -v cargo >/dev/null 2>&1 && [[ -d "${HOME:-/root}/.cargo/bin" ]]; then
    PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
ensure_test_deps || exit 1
command -v cargo >/dev/null 2>&1 || { echo "test.sh: cargo not found (install Rust: https://rustup.rs)" >&2; exit 1; }
exec cargo test --all-targets "$@"
