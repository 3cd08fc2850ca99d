#!/usr/bin/env python3
"""The sink on a Unix-domain socket against TCP loopback, and against Postfix's smtp-sink on
each (issue 13, `--listen unix:PATH`).

usage: bench/unix_listen.py [--binary PATH] [--reps N] [--messages N] [--lmtp]

Four servers, measured interleaved in one run (rep by rep, so drift on a shared machine hits
them alike), each fresh and pinned to CPU 0, with Postfix's smtp-source (20 sessions, 1 KiB
messages, many per connection; -L with --lmtp) pinned to CPU 1:
  ringrelay-tcp   ringrelay sink --shards 1 --listen 127.0.0.1:PORT
  ringrelay-unix  ringrelay sink --shards 1 --listen unix:PATH
  smtp-sink-tcp   smtp-sink 127.0.0.1:PORT
  smtp-sink-unix  smtp-sink unix:PATH
For each it prints the server's CPU seconds per 10,000 messages (all threads, schedstat) and
the messages per second smtp-source achieved (medians over the reps), then the ratios:
ringrelay against smtp-sink on the same transport, and unix against tcp for each server.
"""
import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from run import cpu_seconds, free_port  # noqa: E402

SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"


def wait_ready(target, limit=10.0):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            if target.startswith("unix:"):
                s = socket.socket(socket.AF_UNIX)
                s.connect(target[5:])
            else:
                host, port = target.rsplit(":", 1)
                s = socket.create_connection((host, int(port)), timeout=1)
            s.close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"no server at {target}")


def server_cmd(name, binary, target, lmtp):
    if name.startswith("ringrelay"):
        cmd = [binary, "sink", "--listen", target, "--shards", "1", "--metrics-listen", "none"]
        return cmd + (["--lmtp"] if lmtp else [])
    cmd = [SMTP_SINK]
    if os.geteuid() == 0:
        cmd += ["-u", "nobody"]
    return cmd + (["-L"] if lmtp else []) + [target, "256"]


def one(name, binary, d, messages, lmtp):
    target = (f"unix:{d}/{name}.sock" if name.endswith("unix")
              else f"127.0.0.1:{free_port()}")
    p = subprocess.Popen(["taskset", "-c", "0"] + server_cmd(name, binary, target, lmtp),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(target)
        before = cpu_seconds(p.pid)
        t0 = time.monotonic()
        subprocess.run(
            ["taskset", "-c", "1", SMTP_SOURCE] + (["-L"] if lmtp else [])
            + ["-s", "20", "-m", str(messages), "-l", "1024",
               "-f", "a@example.com", "-t", "b@example.com", target],
            check=True, timeout=300, stdout=subprocess.DEVNULL)
        wall = time.monotonic() - t0
        return (cpu_seconds(p.pid) - before) / messages * 10_000, messages / wall
    finally:
        p.terminate()
        p.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/ringrelay")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--messages", type=int, default=30000)
    ap.add_argument("--lmtp", action="store_true")
    a = ap.parse_args()
    names = ["ringrelay-tcp", "ringrelay-unix", "smtp-sink-tcp", "smtp-sink-unix"]
    cpu = {n: [] for n in names}
    rate = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o777)  # smtp-sink runs as nobody
        for rep in range(a.reps):
            for n in names:
                c, r = one(n, a.binary, d, a.messages, a.lmtp)
                cpu[n].append(c)
                rate[n].append(r)
            print(f"rep {rep + 1}: " + ", ".join(
                f"{n} {cpu[n][-1]:.3f} s/10k {rate[n][-1]:.0f} msg/s" for n in names), flush=True)
    med_cpu = {n: statistics.median(v) for n, v in cpu.items()}
    med_rate = {n: statistics.median(v) for n, v in rate.items()}
    proto = "LMTP" if a.lmtp else "SMTP"
    print(f"\n{proto}, median of {a.reps} reps, {a.messages} messages each")
    print(f"  {'server':16} {'CPU s/10k':>10} {'msg/s':>8}")
    for n in names:
        print(f"  {n:16} {med_cpu[n]:10.3f} {med_rate[n]:8.0f}")
    print("ratios (CPU per message: lower is better; msg/s: higher is better)")
    for t in ("tcp", "unix"):
        r, s = f"ringrelay-{t}", f"smtp-sink-{t}"
        print(f"  ringrelay/smtp-sink on {t:4}: CPU {med_cpu[r] / med_cpu[s]:.3f}, "
              f"msg/s {med_rate[r] / med_rate[s]:.3f}")
    for s in ("ringrelay", "smtp-sink"):
        print(f"  {s} unix/tcp: CPU {med_cpu[s + '-unix'] / med_cpu[s + '-tcp']:.3f}, "
              f"msg/s {med_rate[s + '-unix'] / med_rate[s + '-tcp']:.3f}")


if __name__ == "__main__":
    main()
