#!/usr/bin/env python3
"""Relay throughput in one run: Postfix's smtp-source against (1) the release `ringrelay sink`
directly, (2) `ringrelay proxy` in front of the same kind of sink, and (3) Python 3.11's
`smtpd.PureProxy` in front of it, with upstream connections opened per message.

Usage: bench/relay_throughput.py [--rounds N] [--messages M] [--sessions S] [--length L]
                                 [--pureproxy-messages M] [--io uring,epoll]
                                 [--binary PATH] [--no-build]
                                 [--client smtp-source|ringload] [--skip-pureproxy]
                                 [--syscalls]

--io takes a list: each driver's proxy is measured in the same run (the sink behind it, and
the direct runs, use the first). --syscalls adds one run per proxy driver with strace attached
to the proxy, counting epoll_wait and io_uring_enter per thread (the shards are the
ringrelay-shard-N threads): a uring shard must show no epoll_wait.

smtp-source does not pipeline; `--client ringload` sends MAIL, RCPT and DATA in one write, which
the relay carries through to its upstream in one write too.

Every run starts a fresh sink (and relay), runs `smtp-source -s S -m M -l L -d` against the
front and stops everything; the sink's summary line must count all M messages, and its
`sessions=` is the number of upstream connections the relay opened. Reported: messages/s
(wall clock of smtp-source), CPU microseconds per message of the relay process (not the sink)
and connections per 100 messages; medians over the rounds, and the ratios.

PureProxy as the seed ships it cannot run here: `python3 -m smtpd -c PureProxy` builds the
server with decode_data=False, so process_message gets bytes and fails on `data.split('\\n')`
(the client sees the connection closed after its final dot). It is run as the seed meant it,
with decode_data=True: `smtpd.PureProxy(local, remote, decode_data=True); asyncore.loop()`.
It answers 250 before relaying and opens one upstream connection per message.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMTP_SOURCE = "/usr/sbin/smtp-source"
TICKS = os.sysconf("SC_CLK_TCK")
PUREPROXY = (
    "import asyncore, smtpd, sys, warnings\n"
    "warnings.simplefilter('ignore')\n"
    "smtpd.PureProxy(('127.0.0.1', int(sys.argv[1])), ('127.0.0.1', int(sys.argv[2])),"
    " decode_data=True)\n"
    "print('ready', flush=True)\n"
    "asyncore.loop()\n"
)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_ringrelay(binary, mode, io, extra):
    args = [binary, mode, "--listen", "127.0.0.1:0", "--io", io, "--metrics-listen", "none"]
    args += extra
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.time() + 20
    while True:
        line = p.stderr.readline()
        if not line or time.time() > deadline:
            p.kill()
            sys.exit(f"ringrelay {mode} did not start: {''.join(lines)}{line}")
        lines.append(line)
        m = re.match(r"ringrelay: listening on \S+:(\d+) \(io=(\w+)", line)
        if m:
            return p, int(m.group(1)), m.group(2)


def start_pureproxy(upstream_port):
    port = free_port()
    p = subprocess.Popen([sys.executable, "-c", PUREPROXY, str(port), str(upstream_port)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.stdout.readline().strip() != "ready":
        p.kill()
        sys.exit(f"PureProxy did not start: {p.stderr.read()}")
    deadline = time.time() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p, port
        except OSError:
            if time.time() > deadline:
                p.kill()
                sys.exit("PureProxy does not listen")
            time.sleep(0.05)


def stop(p, timeout=120):
    p.send_signal(signal.SIGTERM)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    return out


def thread_names(pid):
    names = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names[int(tid)] = f.read().strip()
        except FileNotFoundError:
            pass
    return names


def run_once(kind, a, trace=None):
    sink, sink_port, driver = start_ringrelay(a.binary, "sink", a.ios[0], [])
    front = None
    tracer = None
    try:
        if kind == "direct":
            port = sink_port
        elif kind.startswith("ringrelay-"):
            front, port, driver = start_ringrelay(
                a.binary, "proxy", kind.split("-", 1)[1],
                ["--upstream", f"127.0.0.1:{sink_port}"])
            if trace:
                names = thread_names(front.pid)
                tracer = subprocess.Popen(
                    ["strace", "-f", "-qq", "-e", "trace=epoll_wait,epoll_pwait,epoll_pwait2,"
                     "io_uring_enter", "-o", trace, "-p", str(front.pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1)
        else:
            front, port = start_pureproxy(sink_port)
        m = a.pureproxy_messages if kind == "pureproxy" else a.messages
        c0 = cpu_seconds(front.pid) if front else 0.0
        if a.client == "ringload":
            # PIPELINING (MAIL, RCPT, DATA in one write) when the front offers it.
            cmd = [a.ringload, "-t", f"127.0.0.1:{port}", "-s", str(a.sessions), "-m", str(m),
                   "--size", str(a.length), "--threads", "1", "--no-progress", "-q",
                   "--timeout", "60", "--rcpts", str(a.rcpts)]
        else:
            cmd = [SMTP_SOURCE, "-s", str(a.sessions), "-m", str(m), "-l", str(a.length),
                   "-d", f"127.0.0.1:{port}"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, timeout=900, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        cpu = (cpu_seconds(front.pid) - c0) if front else None
        if tracer:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=30)
            counts = {}
            with open(trace) as f:
                for line in f:
                    # "TID call(args...", possibly "<unfinished ...>"; "<... call resumed>"
                    # lines continue a call already counted.
                    got = re.match(r"(\d+)\s+(\w+)\(", line)
                    if not got:
                        continue
                    call = got.group(2)
                    who = names.get(int(got.group(1)), "?")
                    who = "shards" if who.startswith("ringrelay-shar") else who
                    counts[(who, call)] = counts.get((who, call), 0) + 1
            return {"syscalls": counts, "messages": m, "driver": driver}
        if kind == "pureproxy":
            # PureProxy said 250 before relaying: wait until the sink has everything.
            time.sleep(1)
    finally:
        if tracer and tracer.poll() is None:
            tracer.kill()
        if front:
            stop(front)
        out = stop(sink)
    got = re.search(r"sink: sessions=(\d+) messages=(\d+)", out)
    if not got or int(got.group(2)) != m:
        sys.exit(f"{kind}: expected {m} messages at the sink, summary: {out.strip()!r}")
    sessions = int(got.group(1))
    return {
        "rate": m / wall,
        "cpu_us": cpu / m * 1e6 if cpu is not None else None,
        "conns_per_100": sessions / m * 100,
        "sessions": sessions,
        "messages": m,
        "driver": driver,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--pureproxy-messages", type=int, default=None,
                    help="messages for the PureProxy runs (default: --messages)")
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--io", default="uring,epoll",
                    help="proxy drivers to measure, comma-separated (auto, uring, epoll)")
    ap.add_argument("--syscalls", action="store_true",
                    help="one more run per proxy driver under strace: epoll_wait and "
                         "io_uring_enter per thread")
    ap.add_argument("--binary", default=None,
                    help="ringrelay binary (default: $CARGO_TARGET_DIR or target/, release)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--client", choices=["smtp-source", "ringload"], default="smtp-source",
                    help="load generator: Postfix's smtp-source (no PIPELINING) or ringload "
                         "(pipelines MAIL/RCPT/DATA when offered)")
    ap.add_argument("--ringload", default=None,
                    help="ringload binary (default: next to the ringrelay binary)")
    ap.add_argument("--rcpts", type=int, default=1, help="recipients per message (ringload)")
    ap.add_argument("--skip-pureproxy", action="store_true",
                    help="only direct and ringrelay (PureProxy does not offer PIPELINING)")
    a = ap.parse_args()
    a.pureproxy_messages = a.pureproxy_messages or a.messages
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    a.binary = a.binary or os.path.join(target, "release", "ringrelay")
    a.ringload = a.ringload or os.path.join(os.path.dirname(a.binary), "ringload")
    if not os.access(SMTP_SOURCE, os.X_OK):
        sys.exit(f"{SMTP_SOURCE} is missing: apt-get install postfix "
                 "(see scripts/install-test-deps.sh)")
    if sys.version_info >= (3, 12):
        sys.exit("Python's smtpd module is gone in 3.12: run this with python3.11")
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "ringrelay", "--bin", "ringload"],
                       cwd=ROOT, check=True)

    a.ios = [x for x in a.io.split(",") if x]
    relays = [f"ringrelay-{io}" for io in a.ios]
    kinds = ["direct"] + relays + ([] if a.skip_pureproxy else ["pureproxy"])
    results = {k: [] for k in kinds}
    print(f"client {a.client}: -s {a.sessions} -m {a.messages} -l {a.length} "
          f"(PureProxy: -m {a.pureproxy_messages}); {a.rounds} round(s); {os.cpu_count()} CPUs")
    print(f"{'round':>5} {'front':>10} {'io':>5} {'msgs/s':>9} {'relay cpu us/msg':>16} "
          f"{'upstream conns':>14} {'per 100 msgs':>12}")
    for r in range(a.rounds):
        order = kinds if r % 2 == 0 else list(reversed(kinds))
        for kind in order:
            res = run_once(kind, a)
            results[kind].append(res)
            cpu = f"{res['cpu_us']:.1f}" if res["cpu_us"] is not None else "-"
            conns = res["sessions"] if kind != "direct" else "-"
            per = f"{res['conns_per_100']:.2f}" if kind != "direct" else "-"
            print(f"{r + 1:>5} {kind:>10} {res['driver']:>5} {res['rate']:>9.0f} {cpu:>16} "
                  f"{conns:>14} {per:>12}", flush=True)

    def med(kind, key):
        return statistics.median(x[key] for x in results[kind])

    direct = med("direct", "rate")
    print(f"median msgs/s: direct to the sink {direct:.0f}")
    for k in relays:
        relay = med(k, "rate")
        print(f"{k} proxy: {relay:.0f} msgs/s = {relay / direct:.3f} of direct; relay CPU per "
              f"message {med(k, 'cpu_us'):.1f} us; upstream connections per 100 messages: "
              f"{med(k, 'conns_per_100'):.2f}")
    if a.syscalls:
        if not shutil.which("strace"):
            sys.exit("--syscalls needs strace (apt-get install strace)")
        for k in relays:
            res = run_once(k, a, trace=os.path.join(tempfile.mkdtemp(), "strace.txt"))
            c = res["syscalls"]
            per = ", ".join(f"{who}: {call} {n}" for (who, call), n in sorted(c.items()))
            shard_epoll = sum(n for (who, call), n in c.items()
                              if who == "shards" and call.startswith("epoll"))
            print(f"{k} under strace ({res['messages']} messages): {per or 'no such calls'}; "
                  f"epoll_wait in the shards: {shard_epoll}")
    relay = med(relays[0], "rate")
    if a.skip_pureproxy:
        return
    pure = med("pureproxy", "rate")
    print(f"median msgs/s through PureProxy {pure:.0f}")
    print(f"{relays[0]} proxy / PureProxy: {relay / pure:.1f}x")
    print(f"relay CPU per message: {relays[0]} {med(relays[0], 'cpu_us'):.1f} us, "
          f"PureProxy {med('pureproxy', 'cpu_us'):.1f} us")
    print(f"upstream connections per 100 messages: {relays[0]} "
          f"{med(relays[0], 'conns_per_100'):.2f}, PureProxy "
          f"{med('pureproxy', 'conns_per_100'):.2f}")


if __name__ == "__main__":
    main()
