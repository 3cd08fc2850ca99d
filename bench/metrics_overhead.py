#!/usr/bin/env python3
"""What metrics cost: the release `ringrelay sink` driven by Postfix's smtp-source with metrics
on (`--metrics-listen 127.0.0.1:0`: recording, publishing and a scrape at the end) and off
(`--metrics-listen none`: the unmetered input path, nothing recorded), alternating runs in one
script so both see the same machine.

Usage: bench/metrics_overhead.py [--rounds N] [--messages M] [--sessions S] [--length L]
                                 [--io auto|uring|epoll] [--binary PATH] [--no-build]

Each run starts a fresh server, waits for its listening line, reads the server's CPU time from
/proc/PID/stat, runs `smtp-source -s S -m M -l L -d 127.0.0.1:PORT`, reads the CPU time again
and stops the server. Reports messages/s (wall clock of smtp-source) and server CPU
microseconds per message, the medians per mode, and the on/off ratios. The server's own summary
line (and, with metrics on, ringrelay_messages_total) must show all M messages.
"""
import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMTP_SOURCE = "/usr/sbin/smtp-source"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the whole line (11 and 12 after the name).
    return (int(fields[11]) + int(fields[12])) / TICKS


def start(binary, io, metrics):
    args = [binary, "sink", "--listen", "127.0.0.1:0", "--io", io,
            "--metrics-listen", "127.0.0.1:0" if metrics else "none"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    port, admin, lines = None, None, []
    deadline = time.time() + 20
    while port is None:
        line = p.stderr.readline()
        if not line or time.time() > deadline:
            p.kill()
            sys.exit(f"server did not start: {''.join(lines)}{line}")
        lines.append(line)
        m = re.match(r"ringrelay: metrics on (http://\S+)", line)
        if m:
            admin = m.group(1)
        m = re.match(r"ringrelay: listening on \S+:(\d+) \(io=(\w+)", line)
        if m:
            port, driver = int(m.group(1)), m.group(2)
    if metrics and admin is None:
        p.kill()
        sys.exit("metrics on, but no metrics line")
    return p, port, admin, driver


def run_once(binary, io, metrics, a):
    p, port, admin, driver = start(binary, io, metrics)
    try:
        c0 = cpu_seconds(p.pid)
        t0 = time.perf_counter()
        subprocess.run([SMTP_SOURCE, "-s", str(a.sessions), "-m", str(a.messages),
                        "-l", str(a.length), "-d", f"127.0.0.1:{port}"],
                       check=True, timeout=600, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(p.pid) - c0
        scraped = None
        if admin:
            text = urllib.request.urlopen(admin, timeout=10).read().decode()
            m = re.search(r'^ringrelay_messages_total\{result="accepted"\} (\S+)$', text, re.M)
            scraped = int(float(m.group(1)))
    finally:
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=60)
    m = re.search(r"messages=(\d+)", out)
    got = int(m.group(1)) if m else -1
    if got != a.messages or (admin and scraped != a.messages):
        sys.exit(f"expected {a.messages} messages, sink saw {got}, metrics {scraped}")
    return {"rate": a.messages / wall, "cpu_us": cpu / a.messages * 1e6, "driver": driver}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--io", default="auto")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "ringrelay"))
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    if not os.access(SMTP_SOURCE, os.X_OK):
        sys.exit(f"{SMTP_SOURCE} is missing: apt-get install postfix (see scripts/install-test-deps.sh)")
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "ringrelay"], cwd=ROOT, check=True)

    results = {True: [], False: []}
    print(f"smtp-source -s {a.sessions} -m {a.messages} -l {a.length} -d; "
          f"{a.rounds} rounds, metrics off/on alternating")
    print(f"{'round':>5} {'metrics':>7} {'io':>5} {'msgs/s':>9} {'cpu us/msg':>10}")
    for r in range(a.rounds):
        # Alternate which mode goes first so drift on the machine affects both alike.
        for metrics in ((False, True) if r % 2 == 0 else (True, False)):
            res = run_once(a.binary, a.io, metrics, a)
            results[metrics].append(res)
            print(f"{r + 1:>5} {'on' if metrics else 'off':>7} {res['driver']:>5} "
                  f"{res['rate']:>9.0f} {res['cpu_us']:>10.1f}", flush=True)

    def med(metrics, key):
        return statistics.median(x[key] for x in results[metrics])

    rate_off, rate_on = med(False, "rate"), med(True, "rate")
    cpu_off, cpu_on = med(False, "cpu_us"), med(True, "cpu_us")
    print(f"median off: {rate_off:.0f} msgs/s, {cpu_off:.1f} cpu us/msg")
    print(f"median on:  {rate_on:.0f} msgs/s, {cpu_on:.1f} cpu us/msg")
    print(f"on/off throughput ratio {rate_on / rate_off:.3f}: "
          f"{(rate_on / rate_off - 1) * 100:+.1f}% messages/s with metrics")
    print(f"on/off server CPU per message ratio {cpu_on / cpu_off:.3f}: "
          f"{(cpu_on / cpu_off - 1) * 100:+.1f}% CPU per message with metrics")

if __name__ == "__main__":
    main()
