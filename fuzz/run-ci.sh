#!/usr/bin/env bash
# Builds the fuzz targets (`session`: the protocol core's invariants; `pipelined`: pipelined
# decisions against a session that waits; `proxy_header`: the PROXY protocol parser) and runs
# each for a bounded time (CI smoke fuzzing).
#
#   fuzz/run-ci.sh [SECONDS]            per target, default 60
#
# Exits non-zero if the target crashes (panic, failed invariant, sanitizer report, timeout,
# OOM); the reproducer is left in fuzz/artifacts/TARGET/. Re-run one with
#   cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/<file>
# and RINGRELAY_FUZZ_TRACE=1 to print the SMTP transcript.
#
# Environment:
#   FUZZ_TOOLCHAIN   rustup toolchain with -Z flags (default: nightly)
#   FUZZ_SANITIZER   address | none | ... (default: none; the target is safe Rust and the
#                    checks are logic invariants, so raw speed finds more per second)
#   FUZZ_JOBS        parallel fuzzing processes, libFuzzer -fork (default: 1)
#   RINGRELAY_FUZZ_TOLERATE  comma-separated keys of already-reported findings to tolerate
#                    (default: none, every check strict; see fuzz/README.md)
set -euo pipefail

secs="${1:-60}"
case "$secs" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
sanitizer="${FUZZ_SANITIZER:-none}"
jobs="${FUZZ_JOBS:-1}"

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi

# Debug assertions (and with them integer-overflow checks) on, as in the recorded runs.
build_flags=(--sanitizer "$sanitizer" --debug-assertions)

extra=()
if [ "$jobs" -gt 1 ]; then
    extra+=("-fork=$jobs")
fi

for target in session pipelined proxy_header; do
    cargo "+$toolchain" fuzz build "${build_flags[@]}" "$target"
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target" "fuzz/regressions/$target"
    # Every recorded finding must stay fixed: replay them first (each one alone).
    for f in "fuzz/regressions/$target"/*; do
        [ -f "$f" ] || continue
        cargo "+$toolchain" fuzz run "${build_flags[@]}" "$target" "$f" -- -runs=1 >/dev/null 2>&1 \
            || { echo "fuzz regression $f fails again" >&2; exit 1; }
    done
    # New corpus entries go to fuzz/corpus/TARGET (cached between CI runs if the CI keeps it);
    # fuzz/seeds/TARGET is read-only input.
    inputs=("fuzz/corpus/$target")
    [ -d "fuzz/seeds/$target" ] && inputs+=("fuzz/seeds/$target")
    opts=(-max_len=4096 -timeout=10 -rss_limit_mb=2048 -max_total_time="$secs" -print_final_stats=1)
    [ -f "fuzz/$target.dict" ] && opts+=("-dict=fuzz/$target.dict")
    cargo "+$toolchain" fuzz run "${build_flags[@]}" "$target" "${inputs[@]}" -- \
        "${opts[@]}" "${extra[@]}"
done
