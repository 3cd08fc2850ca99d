#!/usr/bin/env bash
# The one command that runs every ringrelay test:
#   1. install the system packages and Python modules the tests talk to (idempotent),
#   2. cargo fmt --check, 3. cargo clippy -D warnings and the library's docs with
#   rustdoc -D warnings, 4. cargo test --all-targets
#   (unit tests, integration tests against real peers, benches built in test mode),
#   5. the fuzz smoke run, when fuzz/run-ci.sh exists (60 s).
# Exits non-zero on the first failure. Set SKIP_DEPS=1 to skip step 1.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
start=$(date +%s)

if [ "${SKIP_DEPS:-0}" != 1 ]; then
    step "installing test dependencies (scripts/install-test-deps.sh)"
    ./scripts/install-test-deps.sh
fi

# The integration tests hold thousands of sockets open at once; make sure this shell (and so
# cargo, the test binaries, the server and the Python peers) may open them.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then hard=65536; fi
ulimit -Sn "$hard" || true
printf 'open files limit: %s\n' "$(ulimit -Sn)"

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo doc --no-deps --lib (rustdoc -D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --lib

step "cargo test --all-targets --no-fail-fast"
mkdir -p target
cargo test --all-targets --no-fail-fast 2>&1 | tee target/test-output.log

if [ -x fuzz/run-ci.sh ] || [ -f fuzz/run-ci.sh ]; then
    step "fuzz smoke run: fuzz/run-ci.sh 60"
    bash fuzz/run-ci.sh 60
else
    step "fuzz/run-ci.sh not present: skipping the fuzz smoke run"
fi

printf '\nscripts/test.sh: all steps passed in %ss\n' "$(( $(date +%s) - start ))"
# One closing line over every test binary (cargo prints one `test result:` line per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' target/test-output.log
