#!/usr/bin/env python3
"""What fault injection costs the sink when nothing fires (issue 13's benchmark).

usage: bench/faults_overhead.py [--binary PATH] [--reps N] [--messages N] [--before PATH]

With --before PATH it instead compares two builds without any fault option (PATH, e.g. the
build of an earlier commit, against --binary), interleaved the same way.

Three sink configurations, measured interleaved in one run (rep by rep, so drift on a shared
machine hits them alike), each a fresh `ringrelay sink --shards 1` pinned to CPU 0 with
Postfix's smtp-source (20 sessions, 1 KiB messages, several per connection) pinned to CPU 1:
  none     no fault option: the fault layer is not there at all
  empty    an empty rules file: the layer is there and checks an empty set per event
  rules20  20 rules that match nothing (recipient and sender domains, a client network, a
           size range, at MAIL, RCPT, DATA and the dot)
For each it prints the server's CPU seconds per 10,000 messages (all threads, schedstat), the
median over the reps, and the ratio against `none`. The issue's target: rules20 within 3%.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from run import cpu_seconds, free_port  # noqa: E402

SMTP_SOURCE = "/usr/sbin/smtp-source"

RULES20 = "seed = 1\n" + "".join(
    f"""
[[rule]]
stage = "{stage}"
action = "reply"
code = 451
match = {{ {match} }}
"""
    for stage, match in [
        (s, m)
        for s in ("mail", "rcpt", "data", "dot", "rcpt")
        for m in (
            'recipient_domain = "nomatch.example"',
            'sender_domain = "nomatch.example"',
            'client = "192.0.2.0/24"',
            "size_min = 1000000000",
        )
    ]
)


def wait_port(port, limit=10.0):
    import socket

    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"sink on {port} did not start")


def one(binary, extra, messages):
    port = free_port()
    args = ["taskset", "-c", "0", binary, "sink", "--listen", f"127.0.0.1:{port}",
            "--shards", "1", "--metrics-listen", "none"] + extra
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        before = cpu_seconds(p.pid)
        subprocess.run(
            ["taskset", "-c", "1", SMTP_SOURCE, "-s", "20", "-m", str(messages), "-l", "1024",
             "-f", "a@example.com", "-t", "b@example.com", f"127.0.0.1:{port}"],
            check=True, timeout=300, stdout=subprocess.DEVNULL)
        return (cpu_seconds(p.pid) - before) / messages * 10_000
    finally:
        p.terminate()
        p.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/ringrelay")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--messages", type=int, default=30000)
    ap.add_argument("--before")
    a = ap.parse_args()
    if a.before:
        runs = {"before": [], "after": []}
        for rep in range(a.reps):
            runs["before"].append(one(a.before, [], a.messages))
            runs["after"].append(one(a.binary, [], a.messages))
            print(f"rep {rep + 1}: before {runs['before'][-1]:.3f}, after {runs['after'][-1]:.3f}",
                  flush=True)
        b, f = statistics.median(runs["before"]), statistics.median(runs["after"])
        print(f"\nserver CPU s per 10k messages: before {b:.3f}, after {f:.3f}, ratio {f / b:.3f}")
        return
    with tempfile.TemporaryDirectory() as d:
        empty = os.path.join(d, "empty.toml")
        rules = os.path.join(d, "rules20.toml")
        open(empty, "w").close()
        with open(rules, "w") as f:
            f.write(RULES20)
        configs = {"none": [], "empty": ["--faults", empty], "rules20": ["--faults", rules]}
        runs = {k: [] for k in configs}
        for rep in range(a.reps):
            for name, extra in configs.items():
                runs[name].append(one(a.binary, extra, a.messages))
            print(f"rep {rep + 1}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in runs.items()),
                  flush=True)
    base = statistics.median(runs["none"])
    print("\nserver CPU s per 10k messages (median of %d reps, %d messages each)" % (a.reps, a.messages))
    for name, v in runs.items():
        m = statistics.median(v)
        print(f"  {name:8} {m:.3f}  ratio {m / base:.3f}")


if __name__ == "__main__":
    main()
