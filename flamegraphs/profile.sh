#!/usr/bin/env bash
# Profiles the release `ringrelay sink` (io_uring, one shard pinned to CPU 0) while ringload
# (pinned to CPU 1) drives it, and draws a flamegraph per scenario:
#   sink-1k: 1 KiB messages, 20 sessions, connections reused, PIPELINING
#   sink-1m: 1 MiB messages, 10 sessions, connections reused
#
#   ringload-1k: the generator itself in the sink-1k run (which side is the limit)
#
# usage: flamegraphs/profile.sh [--no-build] [--seconds N] [--io uring|epoll]
#
# Sampling: Debian's linux-perf, `perf record -e cpu-clock` (this VM exposes no hardware
# counters; the software clock works), user and kernel stacks unwound from DWARF (the release
# profile keeps line tables: debug = 1), at 499 Hz for N seconds (default 5) after 1 s of
# warm-up. Folding and drawing: inferno (`cargo install inferno`). Writes, per scenario,
# flamegraphs/<scenario>.svg and flamegraphs/<scenario>.top.txt (self time by symbol,
# `perf report --no-children`); the perf.data files stay in the target directory.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release"
OUT="$ROOT/flamegraphs"
WORK="$TARGET/flamegraphs"
SECS=5
IO=uring
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) BUILD=0 ;;
        --seconds) SECS="$2"; shift ;;
        --io) IO="$2"; shift ;;
        *) echo "usage: $0 [--no-build] [--seconds N] [--io uring|epoll]" >&2; exit 2 ;;
    esac
    shift
done
for tool in perf inferno-collapse-perf inferno-flamegraph taskset; do
    command -v "$tool" >/dev/null || {
        echo "$tool is missing (perf: apt-get install linux-perf; inferno: cargo install inferno)" >&2
        exit 2
    }
done
if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && cargo build --release --bin ringrelay --bin ringload)
fi
mkdir -p "$WORK"

# profile NAME WHO ARGS...: WHO is "server" or "generator", the process sampled.
profile() {
    local name="$1" who="$2"; shift 2
    local log="$WORK/$name.server.log"
    taskset -c 0 "$BIN/ringrelay" sink --listen 127.0.0.1:0 --io "$IO" --metrics-listen none \
        >/dev/null 2>"$log" &
    local server=$!
    local port=""
    for _ in $(seq 100); do
        port="$(sed -n 's/^ringrelay: listening on [^ ]*:\([0-9]*\) .*/\1/p' "$log")"
        [ -n "$port" ] && break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        echo "server did not start: $(cat "$log")" >&2
        kill "$server"
        exit 1
    fi
    taskset -c 1 "$BIN/ringload" -t "127.0.0.1:$port" --threads 1 --duration $((SECS + 2)) \
        --no-progress --json "$WORK/$name.ringload.json" "$@" >"$WORK/$name.ringload.txt" &
    local load=$!
    sleep 1
    local pid="$server" bin="$BIN/ringrelay"
    if [ "$who" = generator ]; then pid="$load"; bin="$BIN/ringload"; fi
    perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$pid" \
        -o "$WORK/$name.perf.data" -- sleep "$SECS" 2>/dev/null
    wait "$load" || true
    kill -TERM "$server"
    wait "$server" || true
    perf script -i "$WORK/$name.perf.data" 2>/dev/null | inferno-collapse-perf >"$WORK/$name.folded"
    local rate
    rate="$(sed -n 's/.* in [0-9.]* s: \([0-9]*\) msg\/s.*/\1/p' "$WORK/$name.ringload.txt")"
    local what="ringrelay sink --io $IO"
    [ "$who" = generator ] && what="ringload (the generator) against ringrelay sink --io $IO"
    inferno-flamegraph --title "$what, $name: ringload $* ($rate msg/s), cpu-clock $SECS s" \
        --width 1600 <"$WORK/$name.folded" >"$OUT/$name.svg"
    {
        echo "# $what under ringload $* ($rate msg/s); $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "# perf record -e cpu-clock -F 499 --call-graph dwarf, $SECS s"
        echo "# samples (1 per ~2 ms of CPU): $(perf report -i "$WORK/$name.perf.data" --stdio 2>/dev/null | sed -n 's/^# Samples: \(.*\) of event.*/\1/p' | head -1)"
        echo "# CPU busy: $(perf report -i "$WORK/$name.perf.data" --stdio 2>/dev/null | sed -n 's/^# Event count (approx.): //p' | head -1 | awk -v s="$SECS" '{printf "%.0f%% of one CPU", $1 / 1e9 / s * 100}')"
        echo "## self time by object"
        perf report -i "$WORK/$name.perf.data" --no-children --sort dso --stdio -g none \
            2>/dev/null | grep -v '^#' | grep -v '^$' | head -6
        echo "## self time by symbol (>= 0.7%)"
        perf report -i "$WORK/$name.perf.data" --no-children --sort dso,symbol --stdio \
            --percent-limit 0.7 -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -40 | sed 's/ *- *- *$//'
        echo "## user-space self time in the binary (>= 0.3%)"
        perf report -i "$WORK/$name.perf.data" --no-children --dsos "$(basename "$bin")" --sort symbol \
            --stdio --percent-limit 0.3 -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -25 | sed 's/ *- *$//' 
    } >"$OUT/$name.top.txt"
    echo "$name: $rate msg/s; $OUT/$name.svg, $OUT/$name.top.txt"
}

profile sink-1k server -s 20 --size 1136
profile sink-1m server -s 10 --size 1048688
profile ringload-1k generator -s 20 --size 1136
