#!/usr/bin/env bash
# Profiles a sink pinned to CPU 0 while ringload (pinned to CPU 1) drives it, and draws a
# flamegraph per scenario (NAME.svg) with a text summary (NAME.top.txt):
#   sink-uring-1k, sink-epoll-1k   ringrelay sink (one shard), 1 KiB, 20 sessions, PIPELINING
#   sink-uring-1m, sink-epoll-1m   ringrelay sink, 1 MiB, 10 sessions
#   canned-1k                      smtp-canned (the physical-limit stand-in), 1 KiB, 20 sessions
#   ringload-1k                    the generator itself against the uring sink (which side is
#                                  the limit)
#
# usage: flamegraphs/profile.sh [--no-build] [--seconds N] [--only NAME]
#
# Sampling: Debian's linux-perf, `perf record -e cpu-clock` (this VM exposes no hardware
# counters; the software clock works), user and kernel stacks unwound from DWARF (the release
# profile keeps line tables: debug = 1), at 499 Hz for N seconds (default 5) after 1 s of
# warm-up. Folding and drawing: inferno (`cargo install inferno`). NAME.top.txt has how busy
# the process was, self time by object and by symbol, and the inclusive time of the frames
# that say where the CPU goes (send, receive, loopback delivery, the protocol code). The
# perf.data and folded stacks stay in the target directory.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release"
OUT="$ROOT/flamegraphs"
WORK="$TARGET/flamegraphs"
SECS=5
ONLY=""
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) BUILD=0 ;;
        --seconds) SECS="$2"; shift ;;
        --only) ONLY="$2"; shift ;;
        *) echo "usage: $0 [--no-build] [--seconds N] [--only NAME]" >&2; exit 2 ;;
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
    (cd "$ROOT" && cargo build --release --bin ringrelay --bin ringload --bin smtp-canned)
fi
mkdir -p "$WORK"

# Frames whose inclusive time goes into NAME.top.txt.
FRAMES='(io_submit_sqes|io_recv|io_send|io_cqring_wait|__do_sys_io_uring_enter|engine::Core::turn|engine::Core::reap|Session::handle_input_bytes|io_write|io_read|do_epoll_wait|ksys_write|ksys_read|tcp_sendmsg|tcp_recvmsg|tcp_write_xmit|net_rx_action|tcp_v4_rcv|tcp_ack|_copy_to_iter|schedule|__pv_queued_spin_lock_slowpath|Session::handle_input_buf|DataScanner::scan|server::conn::serve::\{\{closure\}\}|canned::on_read|ringload::session::run::\{\{closure\}\}|parse_reply)[ -]*$'

# profile NAME SERVER WHO ARGS...: SERVER is uring, epoll or canned; WHO is "server" or
# "generator", the process sampled; ARGS go to ringload.
profile() {
    local name="$1" kind="$2" who="$3"; shift 3
    [ -n "$ONLY" ] && [ "$ONLY" != "$name" ] && return 0
    local log="$WORK/$name.server.log" what bin
    if [ "$kind" = canned ]; then
        taskset -c 0 "$BIN/smtp-canned" --listen 127.0.0.1:0 --threads 1 >/dev/null 2>"$log" &
        what="smtp-canned"; bin="$BIN/smtp-canned"
    else
        taskset -c 0 "$BIN/ringrelay" sink --listen 127.0.0.1:0 --io "$kind" \
            --metrics-listen none >/dev/null 2>"$log" &
        what="ringrelay sink --io $kind"; bin="$BIN/ringrelay"
    fi
    local server=$!
    local port=""
    for _ in $(seq 100); do
        port="$(sed -n 's/^[a-z-]*: listening on [^ ]*:\([0-9]*\) .*/\1/p' "$log")"
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
    local pid="$server"
    if [ "$who" = generator ]; then
        pid="$load"; bin="$BIN/ringload"; what="ringload (the generator) against $what"
    fi
    perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$pid" \
        -o "$WORK/$name.perf.data" -- sleep "$SECS" 2>/dev/null
    wait "$load" || true
    kill -TERM "$server"
    wait "$server" || true
    perf script -i "$WORK/$name.perf.data" 2>/dev/null | inferno-collapse-perf >"$WORK/$name.folded"
    local rate
    rate="$(sed -n 's/.* in [0-9.]* s: \([0-9]*\) msg\/s.*/\1/p' "$WORK/$name.ringload.txt")"
    inferno-flamegraph --title "$what, $name: ringload $* ($rate msg/s), cpu-clock $SECS s" \
        --width 1600 <"$WORK/$name.folded" >"$OUT/$name.svg"
    (
        # A summary line that matches nothing, or head closing a pipe, is not an error here.
        set +e +o pipefail
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
        echo "## inclusive time of selected frames"
        perf report -i "$WORK/$name.perf.data" --children --sort symbol --stdio -g none \
            2>/dev/null | grep -E "\] [^ ]*$FRAMES" | sed 's/[ -]*$//' | head -30
        echo "## user-space self time in the binary (>= 0.3%)"
        perf report -i "$WORK/$name.perf.data" --no-children --dsos "$(basename "$bin")" --sort symbol \
            --stdio --percent-limit 0.3 -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -25 | sed 's/ *- *$//' 
    ) >"$OUT/$name.top.txt"
    echo "$name: $rate msg/s; $OUT/$name.svg, $OUT/$name.top.txt"
}

for io in uring epoll; do
    profile "sink-$io-1k" "$io" server -s 20 --size 1136
    profile "sink-$io-1m" "$io" server -s 10 --size 1048688
done
profile canned-1k canned server -s 20 --size 1136
profile ringload-1k uring generator -s 20 --size 1136
