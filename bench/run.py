#!/usr/bin/env python3
"""Side-by-side SMTP sink benchmark: ringrelay sink (io_uring and epoll) against Postfix's
smtp-sink, aiosmtpd's Sink handler, Python 3.11's smtpd and smtp-canned (our canned-reply
physical-limit stand-in), each driven by Postfix's smtp-source and by ringload, in one run.

usage: bench/run.py [--quick] [--reps N] [--only throughput|memory] [--servers a,b]
                    [--scenarios a,b] [--generators a,b] [--no-pin] [--no-build] [--out DIR]
                    [--scale F] [--tag NAME] [--before DIR]

--before DIR adds the servers ringrelay-uring-before and ringrelay-epoll-before: DIR/ringrelay
(an earlier build), measured in the same run for before/after figures.

Generators: smtp-source and ringload (DATA, PIPELINING when offered) by default; ringload-bdat
(one write per message, for servers that offer CHUNKING: ringrelay, smtp-canned) on request.

Every cell starts a fresh server (so its peak RSS is its own), pinned to CPU 0 with the
generator pinned to CPU 1 (--no-pin lets both float; ringrelay then runs a shard per CPU).
For each cell it records
  msgs/s         messages acknowledged / wall time: smtp-source's whole run; ringload's own
                 figure (first connect to last acknowledgement, in its JSON)
  CPU s/10k      the server's CPU time over the run (all threads: /proc/PID/task/*/schedstat,
                 nanoseconds; /proc/PID/stat utime+stime where that is missing), per 10,000
                 messages
  peak RSS       the server's VmHWM (/proc/PID/status) at the end of the cell
  p99            ringload's latency p99: the 'transaction' phase (MAIL to final reply) when
                 connections are reused, the 'message' phase (connect to final reply) when each
                 message opens its own; smtp-source measures no latency
and writes bench/results/<date>-sink.md (ratios against smtp-sink under the same generator)
and <date>-sink.json (every run). Messages are the same size on the wire for both generators:
smtp-source -l 1024 sends 1136 octets, -l 1048576 sends 1048688; ringload gets --size 1136 and
--size 1048688.

Memory (--only memory, also part of a full run):
  idle      RSS with 10,000 idle connections (greeting and EHLO done) minus RSS before, per
            connection (RLIMIT_NOFILE is raised to its hard limit for the run)
  32 MiB    peak RSS while 50 sessions each send one 32 MiB message at once (ringload)

The run is bounded: counts are scaled (--scale, default 1.0; the Python servers get a tenth)
so a full run takes well under 10 minutes on 2 cores. The machine is shared: expect noise.
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

SERVER_CPU = "0"
CLIENT_CPU = "1"

# name: (size for ringload, smtp-source -l, sessions, new connection per message, base count)
SCENARIOS = {
    "1k-s1": (1136, 1024, 1, False, 8000),
    "1k-s20": (1136, 1024, 20, False, 30000),
    "1k-s100": (1136, 1024, 100, False, 30000),
    "1k-newconn-s20": (1136, 1024, 20, True, 6000),
    "1m-s10": (1048688, 1048576, 10, False, 1500),
}
SERVERS = ["ringrelay-uring", "ringrelay-epoll", "smtp-sink", "smtp-canned", "aiosmtpd", "py-smtpd"]
SLOW = {"aiosmtpd": 0.1, "py-smtpd": 0.1}
CHUNKING = {"ringrelay-uring", "ringrelay-epoll", "smtp-canned"}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def cpu_seconds(pid):
    """CPU time of every thread: nanosecond run time from /proc/PID/task/*/schedstat where the
    kernel has it, else utime+stime in clock ticks from /proc/PID/stat."""
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except FileNotFoundError:
                pass  # a thread that just exited
        return total / 1e9
    except (FileNotFoundError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rss_kib(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE // 1024


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_greeting(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"no SMTP greeting on port {port}")


class Server:
    """One server process under test."""

    def __init__(self, name, a, max_conn=None):
        self.name = name
        pin = [] if a.no_pin else ["taskset", "-c", SERVER_CPU]
        b = a.before if name.endswith("-before") else a.bin
        port = free_port()
        parse = None
        if name.startswith("ringrelay-"):
            io = name.split("-")[1]
            cmd = [f"{b}/ringrelay", "sink", "--listen", "127.0.0.1:0", "--io", io,
                   "--metrics-listen", "none"]
            parse = r"ringrelay: listening on \S+:(\d+)"
        elif name == "smtp-sink":
            # -u nobody: it refuses to run as root otherwise; -m: its connection cap (default 256).
            cmd = [SMTP_SINK, "-u", "nobody", "-m", str(max_conn or 1000),
                   f"127.0.0.1:{port}", "4096"]
        elif name == "smtp-canned":
            threads = "1" if not a.no_pin else str(os.cpu_count())
            cmd = [f"{b}/smtp-canned", "--listen", "127.0.0.1:0", "--threads", threads]
            parse = r"smtp-canned: listening on \S+:(\d+)"
        elif name == "aiosmtpd":
            cmd = [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}",
                   "-c", "aiosmtpd.handlers.Sink"]
        elif name == "py-smtpd":
            cmd = ["python3.11", "-W", "ignore", os.path.join(ROOT, "bench", "servers", "pysmtpd_sink.py"),
                   str(port)]
        else:
            raise ValueError(name)
        self.p = subprocess.Popen(pin + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True)
        if parse:
            deadline = time.time() + 20
            lines = []
            while True:
                line = self.p.stderr.readline()
                lines.append(line)
                m = re.search(parse, line)
                if m:
                    port = int(m.group(1))
                    break
                if not line or time.time() > deadline:
                    self.stop()
                    raise RuntimeError(f"{name} did not start: {''.join(lines)}")
            # Keep draining stderr so the server never blocks on it.
            threading.Thread(target=lambda: self.p.stderr.read(), daemon=True).start()
        else:
            threading.Thread(target=lambda: self.p.stderr.read(), daemon=True).start()
        self.port = port
        wait_greeting(port)
        self.pid = self.p.pid  # taskset execs, so this is the server itself

    def cpu(self):
        return cpu_seconds(self.pid)

    def hwm_kib(self):
        return status_kib(self.pid, "VmHWM")

    def rss_kib(self):
        return rss_kib(self.pid)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def run_smtp_source(a, srv, size_l, sessions, newconn, count):
    pin = [] if a.no_pin else ["taskset", "-c", CLIENT_CPU]
    cmd = pin + [SMTP_SOURCE, "-s", str(sessions), "-m", str(count), "-l", str(size_l)]
    if not newconn:
        cmd.append("-d")
    cmd.append(f"127.0.0.1:{srv.port}")
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       timeout=300)
    wall = time.perf_counter() - t0
    ok = r.returncode == 0
    return {"msgs": count if ok else 0, "rate": count / wall if ok else 0.0, "wall": wall,
            "p99_ms": None, "ok": ok, "error": None if ok else r.stderr.strip()[-300:]}


def run_ringload(a, srv, size, sessions, newconn, count, timeout=30, bdat=False):
    pin = [] if a.no_pin else ["taskset", "-c", CLIENT_CPU]
    out = os.path.join(a.tmp, "ringload.json")
    threads = "1" if not a.no_pin else str(os.cpu_count())
    cmd = pin + [f"{a.bin}/ringload", "-t", f"127.0.0.1:{srv.port}", "-s", str(sessions),
                 "-m", str(count), "--size", str(size), "--threads", threads, "--json", out,
                 "--no-progress", "-q", "--timeout", str(timeout)]
    if newconn:
        cmd += ["-k", "1"]
    if bdat:
        cmd += ["--bdat"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       timeout=300)
    wall = time.perf_counter() - t0
    with open(out) as f:
        j = json.load(f)
    ok = r.returncode == 0
    phase = "message" if newconn else "transaction"
    return {"msgs": j["acknowledged"], "rate": j["msgs_per_s"], "wall": wall,
            "p99_ms": j["latency_us"].get(phase, {}).get("p99", 0) / 1000.0, "ok": ok,
            "error": None if ok else (json.dumps(j["errors"]) + " " + r.stderr.strip())[-300:]}


def cell(a, server, scenario, generator):
    size, size_l, sessions, newconn, base = SCENARIOS[scenario]
    count = max(int(base * a.scale * SLOW.get(server, 1.0)), sessions * 2)
    if server == "py-smtpd" and newconn:
        count = max(count // 2, 100)
    runs = []
    reps = 1 if server in SLOW else a.reps
    for _ in range(reps):
        srv = Server(server, a)
        try:
            c0 = srv.cpu()
            if generator == "smtp-source":
                res = run_smtp_source(a, srv, size_l, sessions, newconn, count)
            else:
                res = run_ringload(a, srv, size, sessions, newconn, count,
                                   bdat=generator == "ringload-bdat")
            cpu = srv.cpu() - c0
            res["cpu_per_10k"] = cpu / max(res["msgs"], 1) * 10000
            res["hwm_mib"] = srv.hwm_kib() / 1024
        finally:
            srv.stop()
        runs.append(res)
    good = [r for r in runs if r["ok"]] or runs
    med = lambda k: statistics.median(r[k] for r in good if r[k] is not None) \
        if any(r[k] is not None for r in good) else None
    return {"server": server, "scenario": scenario, "generator": generator, "count": count,
            "reps": reps, "ok": all(r["ok"] for r in runs), "rate": med("rate"),
            "cpu_per_10k": med("cpu_per_10k"), "hwm_mib": med("hwm_mib"), "p99_ms": med("p99_ms"),
            "runs": runs}


# ---- memory -------------------------------------------------------------------------------

def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def idle_connections(a, server, n):
    """Opens n connections, reads each greeting, says EHLO, reads the reply; returns KiB/conn."""
    srv = Server(server, a, max_conn=n + 100)
    socks = []
    try:
        time.sleep(0.3)
        before = srv.rss_kib()
        sel = selectors.DefaultSelector()
        pending = {}
        batch = 100  # within every server's listen backlog (asyncio: 100)
        t0 = time.time()
        for start in range(0, n, batch):
            for _ in range(min(batch, n - start)):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", srv.port))
                socks.append(s)
                pending[s.fileno()] = [s, b"", 0]
                sel.register(s, selectors.EVENT_READ)
            # Drive this batch: greeting -> EHLO -> final EHLO line.
            deadline = time.time() + 60
            while pending and time.time() < deadline:
                for key, _ in sel.select(timeout=1):
                    st = pending.get(key.fd)
                    if st is None:
                        continue
                    try:
                        data = st[0].recv(4096)
                    except BlockingIOError:
                        continue
                    if not data:
                        raise RuntimeError(f"{server} closed an idle connection")
                    st[1] += data
                    while b"\n" in st[1]:
                        line, st[1] = st[1].split(b"\n", 1)
                        if st[2] == 0 and line.startswith(b"220"):
                            st[2] = 1
                            st[0].sendall(b"EHLO idle.example\r\n")
                        elif st[2] == 1 and line[3:4] == b" ":
                            st[2] = 2
                            sel.unregister(st[0])
                            del pending[key.fd]
            if pending:
                raise RuntimeError(f"{server}: {len(pending)} connections got no EHLO reply")
        setup = time.time() - t0
        time.sleep(1.0)
        after = srv.rss_kib()
        return {"server": server, "connections": n, "rss_before_mib": before / 1024,
                "rss_after_mib": after / 1024, "kib_per_conn": (after - before) / n,
                "setup_s": setup}
    finally:
        for s in socks:
            s.close()
        srv.stop()


def big_messages(a, server, sessions=50, size=32 * 1024 * 1024):
    """50 sessions each send one 32 MiB message at once; the server's RSS is sampled."""
    srv = Server(server, a)
    try:
        time.sleep(0.3)
        before = srv.rss_kib()
        peak = [before]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    peak[0] = max(peak[0], srv.rss_kib())
                except OSError:
                    return
                time.sleep(0.01)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        c0 = srv.cpu()
        res = run_ringload(a, srv, size, sessions, False, sessions, timeout=300)
        stop.set()
        t.join()
        return {"server": server, "sessions": sessions, "size": size, "ok": res["ok"],
                "acknowledged": res["msgs"], "error": res["error"],
                "rss_before_mib": before / 1024, "rss_peak_sampled_mib": peak[0] / 1024,
                "vmhwm_mib": srv.hwm_kib() / 1024, "wall_s": res["wall"],
                "cpu_s": srv.cpu() - c0}
    finally:
        srv.stop()


# ---- report -------------------------------------------------------------------------------

def machine():
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except Exception:
            return "?"
    model = sh("lscpu | sed -n 's/^Model name: *//p'")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{model}, {os.cpu_count()} CPUs",
        "memory": sh("free -g | awk '/^Mem:/{print $2\" GiB\"}'"),
        "kernel": platform.release(),
        "os": sh(". /etc/os-release; echo $PRETTY_NAME"),
        "rustc": sh("rustc --version"),
        "postfix": sh("dpkg-query -W -f='${Version}' postfix"),
        "aiosmtpd": sh(f"{sys.executable} -c 'import aiosmtpd; print(aiosmtpd.__version__)'"),
        "python_smtpd": sh("python3.11 --version"),
        "commit": sh(f"git -C {ROOT} rev-parse --short HEAD"),
        "load_before": sh("cut -d' ' -f1-3 /proc/loadavg"),
    }


def fmt(v, spec):
    return "–" if v is None else format(v, spec)


def ratio(v, base, invert=False):
    if v is None or base is None or base == 0 or v == 0:
        return "–"
    return f"{(base / v if invert else v / base):.2f}×"


def markdown(a, m, cells, idle, big):
    out = []
    out.append(f"# Sink benchmark, {m['date']}\n")
    out.append("Generated by `bench/run.py`" + (" --quick" if a.quick else "") +
               f" (reps {a.reps}, scale {a.scale}). Machine: {m['cpu']}, {m['memory']}, "
               f"{m['os']}, kernel {m['kernel']}; {m['rustc']}; Postfix {m['postfix']}, "
               f"aiosmtpd {m['aiosmtpd']}, {m['python_smtpd']}; ringrelay {m['commit']}. "
               f"Load average before the run: {m['load_before']}.\n")
    pin = ("each server pinned to CPU 0 and the generator to CPU 1 (ringrelay: 1 shard; "
           "smtp-canned: 1 thread; ringload: 1 thread)" if not a.no_pin
           else "servers and generators unpinned")
    out.append(
        f"Setup: {pin}; a fresh server per cell; loopback TCP. The machine is a shared 2-core "
        "VM with other work running, so figures are noisy (median of the reps shown); compare "
        "within a row group, not across runs. **msgs/s** = acknowledged messages per second "
        "(smtp-source: wall time of its run; ringload: its own first-connect-to-last-ack time). "
        "**CPU s/10k** = server CPU seconds (user+system, all threads, from "
        "/proc/PID/task/*/schedstat) per 10,000 messages. **RSS** = server VmHWM in MiB. **p99** = ringload's latency p99: MAIL to final reply "
        "when connections are reused, connect to final reply when each message opens its own; "
        "smtp-source reports none. Ratios "
        "are against smtp-sink under the same generator and scenario: ×msgs/s higher is better, "
        "×CPU is smtp-sink's CPU per message divided by ours (higher is better). The Python "
        "servers run a tenth of the messages, once. ringload-bdat rows (BDAT, one write per message; "
        "only servers offering CHUNKING) are compared with smtp-sink under ringload with DATA. Messages are 1136 octets (smtp-source "
        "-l 1024) and 1048688 octets (-l 1048576) on the wire for both generators.\n")
    for scen in SCENARIOS:
        size, _, sessions, newconn, _ = SCENARIOS[scen]
        desc = (f"{'1 KiB' if size < 10000 else '1 MiB'}, {sessions} session"
                f"{'s' if sessions > 1 else ''}, "
                f"{'a new connection per message' if newconn else 'connections reused'}")
        rows = [c for c in cells if c["scenario"] == scen]
        if not rows:
            continue
        out.append(f"\n## {scen}: {desc}\n")
        out.append("| generator | server | msgs/s | ×smtp-sink | CPU s/10k | ×CPU | RSS MiB | p99 ms | msgs | ok |")
        out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for gen in ("smtp-source", "ringload", "ringload-bdat"):
            base = next((c for c in rows if c["generator"] == gen and c["server"] == "smtp-sink"
                         and c["ok"]), None)
            if base is None and gen == "ringload-bdat":
                # smtp-sink has no CHUNKING: compare with it under ringload with DATA.
                base = next((c for c in rows if c["generator"] == "ringload"
                             and c["server"] == "smtp-sink"), None)
            for c in [c for c in rows if c["generator"] == gen]:
                out.append(
                    f"| {gen} | {c['server']} | {fmt(c['rate'], ',.0f')} | "
                    f"{ratio(c['rate'], base and base['rate'])} | {fmt(c['cpu_per_10k'], '.3f')} | "
                    f"{ratio(c['cpu_per_10k'], base and base['cpu_per_10k'], invert=True)} | "
                    f"{fmt(c['hwm_mib'], '.1f')} | {fmt(c['p99_ms'], '.2f')} | {c['count']} | "
                    f"{'yes' if c['ok'] else 'NO'} |")
    out.extend(targets(cells, idle))
    if idle:
        out.append("\n## Memory: 10,000 idle connections\n")
        out.append("Each connection has read the greeting and had its EHLO answered, then stays idle. "
                   "RSS counts user-space memory only (socket buffers are kernel memory).\n")
        out.append("| server | connections | RSS before MiB | RSS with connections MiB | KiB per connection |")
        out.append("|---|---:|---:|---:|---:|")
        for r in idle:
            if "error" in r:
                out.append(f"| {r['server']} | – | – | – | failed: {r['error']} |")
            else:
                out.append(f"| {r['server']} | {r['connections']} | {r['rss_before_mib']:.1f} | "
                           f"{r['rss_after_mib']:.1f} | {r['kib_per_conn']:.2f} |")
    if big:
        out.append("\n## Memory: 50 sessions each sending one 32 MiB message at once (ringload)\n")
        out.append("Peak RSS sampled every 10 ms during the run and VmHWM at the end. A server "
                   "that buffers whole messages needs about 50 × 32 MiB = 1600 MiB.\n")
        out.append("| server | acknowledged | RSS before MiB | peak RSS (sampled) MiB | VmHWM MiB | wall s | CPU s |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        for r in big:
            if "rss_before_mib" not in r:
                out.append(f"| {r['server']} | failed: {r.get('error')} | | | | | |")
                continue
            out.append(f"| {r['server']} | {r['acknowledged']}/{r['sessions']} | {r['rss_before_mib']:.1f} | "
                       f"{r['rss_peak_sampled_mib']:.1f} | {r['vmhwm_mib']:.1f} | {r['wall_s']:.1f} | "
                       f"{r['cpu_s']:.2f} |")
    return "\n".join(out) + "\n"


def targets(cells, idle):
    """The io_uring engine issue's targets, computed from this run (benchmarks, not tests)."""
    def get(scen, gen, server, key):
        c = next((c for c in cells if (c["scenario"], c["generator"], c["server"]) == (scen, gen, server)), None)
        return c and c.get(key)

    def r(a, b):
        return f"{a / b:.2f}" if a and b else "–"

    def verdict(oks):
        oks = [o for o in oks if o is not None]
        return "–" if not oks else "yes" if all(oks) else "no" if not any(oks) else "partly"
    out = ["\n## Targets (io_uring engine)\n",
           "| target | measured | met? |", "|---|---|---|"]
    for scen in ("1k-s20", "1k-newconn-s20"):
        for gen in ("smtp-source", "ringload"):
            u = get(scen, gen, "ringrelay-uring", "cpu_per_10k")
            e = get(scen, gen, "ringrelay-epoll", "cpu_per_10k")
            s = get(scen, gen, "smtp-sink", "cpu_per_10k")
            if not u:
                continue
            before = get(scen, gen, "ringrelay-uring-before", "cpu_per_10k")
            extra = f"; before (tokio-uring): {r(before, e)}× epoll" if before else ""
            out.append(f"| uring CPU per message ≤ 0.85× epoll's and ≤ 0.8× smtp-sink's ({scen}, "
                       f"{gen}) | {r(u, e)}× epoll, {r(u, s)}× smtp-sink{extra} | "
                       f"{verdict([e and u / e <= 0.85, s and u / s <= 0.8])} |")
    for gen in ("smtp-source", "ringload"):
        ur, er = get("1m-s10", gen, "ringrelay-uring", "rate"), get("1m-s10", gen, "ringrelay-epoll", "rate")
        uc, ec = (get("1m-s10", gen, "ringrelay-uring", "cpu_per_10k"),
                  get("1m-s10", gen, "ringrelay-epoll", "cpu_per_10k"))
        if ur and er:
            out.append(f"| 1 MiB: uring ≥ epoll in msg/s and CPU ({gen}) | msg/s {r(ur, er)}×, "
                       f"CPU per message {r(uc, ec)}× | {verdict([ur >= er, uc and ec and uc <= ec])} |")
    kib = [next((x["kib_per_conn"] for x in idle if x["server"] == f"ringrelay-{io}" and "kib_per_conn" in x), None)
           for io in ("uring", "epoll", "uring-before")]
    if kib[0] is not None:
        out.append(f"| idle connections ≤ 3 KiB each at 10,000 (uring) | uring {fmt(kib[0], '.2f')} KiB, "
                   f"epoll {fmt(kib[1], '.2f')} KiB, before (tokio-uring) {fmt(kib[2], '.2f')} KiB | "
                   f"{verdict([kib[0] <= 3])} |")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the messages, 1 rep")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--only", choices=["throughput", "memory"])
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--generators", default="smtp-source,ringload",
                    help="smtp-source, ringload, ringload-bdat (BDAT: CHUNKING servers only)")
    ap.add_argument("--idle", type=int, default=10000, help="idle connections to open")
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--tag", default="sink")
    ap.add_argument("--before", help="a directory with an earlier ringrelay build to compare")
    a = ap.parse_args()
    if a.quick:
        a.scale, a.reps = a.scale * 0.1, 1
    a.bin = os.path.join(TARGET, "release")
    servers_given = [s for s in a.servers.split(",") if s]
    if a.before:
        a.before = os.path.abspath(a.before)
        if not os.access(os.path.join(a.before, "ringrelay"), os.X_OK):
            sys.exit(f"--before {a.before}: no ringrelay binary there")
        for extra in ("ringrelay-uring-before", "ringrelay-epoll-before"):
            if extra not in servers_given:
                servers_given.append(extra)
        a.servers = ",".join(servers_given)
    elif any(s.endswith("-before") for s in servers_given):
        sys.exit("the -before servers need --before DIR")
    for tool in (SMTP_SOURCE, SMTP_SINK):
        if not os.access(tool, os.X_OK):
            sys.exit(f"{tool} is missing: apt-get install postfix")
    if not shutil.which("taskset") and not a.no_pin:
        sys.exit("taskset is missing (util-linux); or run with --no-pin")
    if os.cpu_count() < 2 and not a.no_pin:
        a.no_pin = True
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "ringrelay", "--bin", "ringload",
                        "--bin", "smtp-canned"], cwd=ROOT, check=True)
    a.tmp = os.path.join(TARGET, "bench-run")
    os.makedirs(a.tmp, exist_ok=True)
    nofile = raise_nofile()
    m = machine()
    started = time.time()
    servers = [s for s in a.servers.split(",") if s]
    cells, idle, big = [], [], []
    if a.only in (None, "throughput"):
        for scen in [s for s in a.scenarios.split(",") if s]:
            for gen in [g for g in a.generators.split(",") if g]:
                for server in servers:
                    if gen == "ringload-bdat" and server not in CHUNKING:
                        continue  # no CHUNKING offered: nothing to measure
                    try:
                        c = cell(a, server, scen, gen)
                    except Exception as e:  # a server that cannot run the scenario
                        c = {"server": server, "scenario": scen, "generator": gen, "count": 0,
                             "reps": 0, "ok": False, "rate": None, "cpu_per_10k": None,
                             "hwm_mib": None, "p99_ms": None, "runs": [], "error": str(e)}
                    cells.append(c)
                    log(f"{scen:<15} {gen:<12} {server:<16} {fmt(c['rate'], '>10,.0f')} msg/s "
                        f"cpu/10k {fmt(c['cpu_per_10k'], '.3f')} rss {fmt(c['hwm_mib'], '.1f')} MiB "
                        f"p99 {fmt(c['p99_ms'], '.2f')} ms {'' if c['ok'] else 'FAILED ' + str(c.get('error') or [r.get('error') for r in c['runs']])}")
    if a.only in (None, "memory"):
        n = min(a.idle, nofile - 200)
        for server in [s for s in servers if s not in ("py-smtpd",)]:
            try:
                r = idle_connections(a, server, n)
            except Exception as e:
                r = {"server": server, "error": str(e)[:200]}
            idle.append(r)
            log(f"idle {server}: {r}")
        for server in [s for s in servers if s not in ("py-smtpd",)]:
            try:
                r = big_messages(a, server)
            except Exception as e:
                r = {"server": server, "error": str(e)[:200]}
            big.append(r)
            log(f"32MiB x 50 {server}: {r}")
    m["duration_s"] = round(time.time() - started, 1)
    os.makedirs(a.out, exist_ok=True)
    day = datetime.date.today().isoformat()
    md = markdown(a, m, cells, idle, big)
    md += f"\nWhole run: {m['duration_s']} s.\n"
    with open(os.path.join(a.out, f"{day}-{a.tag}.md"), "w") as f:
        f.write(md)
    with open(os.path.join(a.out, f"{day}-{a.tag}.json"), "w") as f:
        json.dump({"machine": m, "cells": cells, "idle": idle, "big": big}, f, indent=1)
    print(md)


if __name__ == "__main__":
    main()
