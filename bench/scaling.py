#!/usr/bin/env python3
"""Multi-core scaling benchmark: `ringrelay sink` and `ringrelay proxy` at 1, 2, 4 and 8 shards,
io_uring and epoll, driven by ringload on its own cores.

usage: bench/scaling.py --server-cpus LIST --load-cpus LIST [--shards 1,2,4,8] [--io uring,epoll]
                        [--modes sink,proxy] [--bin DIR | --build] [--seconds N] [--sessions N]
                        [--size SIZE] [--rcpts N] [--no-pipelining] [--reps N]
                        [--upstream-cpus LIST|load] [--out DIR] [--tag NAME] [--quick]

e.g. on a 16-core machine with only the binaries copied to ./bin:
  python3 bench/scaling.py --server-cpus 0-7 --load-cpus 8-15 --bin ./bin

Goals (the multi-core issue): at 8 shards, msgs/s ≥ 7.2× the 1-shard figure, and uring ≥ 1.15×
epoll. Stdlib only; needs taskset (util-linux). Nothing is built unless --build is given.

Each cell (mode × io × shard count K, once per rep) starts fresh servers:
  sink    `ringrelay sink --shards K --io IO --metrics-listen none --listen 127.0.0.1:0`,
          pinned with `taskset -c` to the first K CPUs of --server-cpus (ringrelay pins each
          shard to one CPU of the set it is given).
  proxy   `ringrelay proxy` with the same flags and `--upstream` a `ringrelay sink` (same io,
          K shards) placed so that it is not the bottleneck:
            - on server CPUs K..2K-1 when --server-cpus has at least 2K CPUs ("separate");
            - else on --upstream-cpus LIST when given (shards: min(K, its CPUs));
            - else on the load CPUs, sharing them with ringload ("load"; shards: min(K, load
              CPUs)); --upstream-cpus load forces this for every K.
          The proxy gets --pool-max SESSIONS: its default (64 per shard) answers 451 "pool
          exhausted" at once to transactions beyond it rather than queueing them. The output
          says where each upstream ran, and the upstream's messages= count must cover every
          message ringload saw acknowledged.
  load    `ringload -t ... -s SESSIONS -d SECONDS --threads <load CPUs> --size SIZE --rcpts N
          --json ...`, closed loop, pinned to --load-cpus.
Recorded per cell:
  msgs/s     ringload's figure (acknowledged / first connect to last acknowledgement)
  CPU s/10k  CPU seconds of the server under test (all threads, /proc/PID/task/*/schedstat)
             per 10,000 messages; for proxy the proxy alone, the upstream sink separately
  busy       that CPU time / (wall time × CPUs it was pinned to): server busy near 100% means
             the server is the bottleneck; load busy (ringload's CPU, plus the upstream's when
             it shares the load CPUs) near 100% means the figure is the load side's limit
  p99        ringload's 'transaction' phase p99 (MAIL written to final reply), ms
Cells whose K exceeds the server CPUs are skipped (and said so). Results: a Markdown table and
JSON in --out (default bench/results/<date>-scaling.md and .json) and the table on stdout;
progress on stderr. Exit status: 0 when every cell that ran succeeded, 1 when one failed, 2 on
bad arguments, 128 + the signal on SIGINT (Ctrl-C), SIGTERM or SIGHUP. Every subprocess has a timeout; servers are always stopped.
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
TICKS = os.sysconf("SC_CLK_TCK")

GOAL_SHARDS = 8
GOAL_SCALING = 7.2
GOAL_URING = 1.15
BUSY_WARN = 0.90        # load/upstream side this busy: the figure may be its limit
START_TIMEOUT = 20      # s for a server to print its listening line
STOP_TIMEOUT = 15       # s for a server to exit after SIGTERM before SIGKILL
LOAD_SLACK = 60         # s a ringload run may exceed --seconds before it is killed
REPLY_TIMEOUT = 20      # ringload --timeout (any one reply)

CHILDREN = []           # every live Popen, killed on the way out whatever happens


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Interrupted(Exception):
    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def on_signal(signum, _frame):
    raise Interrupted(signum)


# ---- arguments ----------------------------------------------------------------------------

def parse_cpus(text, what):
    """'0-3,8' -> [0, 1, 2, 3, 8]; raises ValueError with a readable message."""
    cpus = []
    if not text or not text.strip():
        raise ValueError(f"{what}: empty CPU list")
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(f"{what}: {part!r} is not a CPU number or range (like 0-3,8)")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"{what}: range {part!r} runs backwards")
        cpus.extend(range(lo, hi + 1))
    if len(set(cpus)) != len(cpus):
        raise ValueError(f"{what}: {text!r} names a CPU twice")
    return cpus


def cpu_list(cpus):
    """[0, 1, 2, 3, 8] -> '0-3,8'."""
    out, cpus = [], sorted(cpus)
    i = 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        out.append(str(cpus[i]) if i == j else f"{cpus[i]}-{cpus[j]}")
        i = j + 1
    return ",".join(out)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="e.g. python3 bench/scaling.py --server-cpus 0-7 --load-cpus 8-15 --bin ./bin")
    ap.add_argument("--server-cpus", required=True, metavar="LIST",
                    help="CPUs for the server under test, e.g. 0-7; K shards use the first K")
    ap.add_argument("--load-cpus", required=True, metavar="LIST",
                    help="CPUs for ringload (one thread each), e.g. 8-15; must not overlap")
    ap.add_argument("--upstream-cpus", metavar="LIST|load",
                    help="proxy mode: where the upstream sink runs when the server CPUs have no "
                         "room for it (default: the load CPUs); 'load' puts it there for every K")
    ap.add_argument("--shards", default="1,2,4,8", help="shard counts (default 1,2,4,8)")
    ap.add_argument("--io", default="uring,epoll", help="event loops (default uring,epoll)")
    ap.add_argument("--modes", default="sink,proxy", help="sink, proxy (default both)")
    ap.add_argument("--bin", metavar="DIR",
                    help="folder with ringrelay and ringload (default $CARGO_TARGET_DIR or "
                         "target/, release)")
    ap.add_argument("--build", action="store_true",
                    help="cargo build --release the two binaries first (needs the repo and cargo)")
    ap.add_argument("--seconds", type=float, default=None,
                    help="ringload duration per cell (default 10; --quick: 3)")
    ap.add_argument("--sessions", type=int, default=400,
                    help="ringload sessions in all (default 400)")
    ap.add_argument("--size", default="1136",
                    help="message size for ringload --size (default 1136 octets)")
    ap.add_argument("--rcpts", type=int, default=1, help="recipients per message (default 1)")
    ap.add_argument("--pipelining", action=argparse.BooleanOptionalAction, default=True,
                    help="MAIL, RCPT and DATA in one write (default on)")
    ap.add_argument("--reps", type=int, default=None,
                    help="runs per cell, median reported (default 1)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"),
                    help="results folder (default bench/results)")
    ap.add_argument("--tag", default="scaling", help="results file name: <date>-<tag>.md/.json")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 3 s per cell unless --seconds, 1 rep")
    a = ap.parse_args(argv)

    try:
        a.server = parse_cpus(a.server_cpus, "--server-cpus")
        a.load = parse_cpus(a.load_cpus, "--load-cpus")
        a.upstream = None
        if a.upstream_cpus and a.upstream_cpus.strip() != "load":
            a.upstream = parse_cpus(a.upstream_cpus, "--upstream-cpus")
    except ValueError as e:
        ap.error(str(e))
    a.upstream_on_load = (a.upstream_cpus or "").strip() == "load"
    allowed = sorted(os.sched_getaffinity(0))
    for name, cpus in (("--server-cpus", a.server), ("--load-cpus", a.load),
                       ("--upstream-cpus", a.upstream or [])):
        missing = [c for c in cpus if c not in allowed]
        if missing:
            ap.error(f"{name}: CPU {cpu_list(missing)} not available "
                     f"(this process may use {cpu_list(allowed)})")
    both = set(a.server) & set(a.load)
    if both:
        ap.error(f"--server-cpus and --load-cpus overlap on CPU {cpu_list(both)}")
    if a.upstream:
        for name, cpus in (("--server-cpus", a.server), ("--load-cpus", a.load)):
            both = set(a.upstream) & set(cpus)
            if both:
                ap.error(f"--upstream-cpus and {name} overlap on CPU {cpu_list(both)}")
    try:
        a.shard_counts = sorted({int(s) for s in a.shards.split(",") if s.strip()})
    except ValueError:
        ap.error(f"--shards: {a.shards!r} is not a list of numbers like 1,2,4,8")
    if not a.shard_counts or a.shard_counts[0] < 1:
        ap.error("--shards: give shard counts of at least 1")
    a.ios = [s.strip() for s in a.io.split(",") if s.strip()]
    if not a.ios or any(s not in ("uring", "epoll") for s in a.ios):
        ap.error(f"--io: {a.io!r}: choose from uring, epoll")
    a.mode_list = [s.strip() for s in a.modes.split(",") if s.strip()]
    if not a.mode_list or any(s not in ("sink", "proxy") for s in a.mode_list):
        ap.error(f"--modes: {a.modes!r}: choose from sink, proxy")
    if a.seconds is None:
        a.seconds = 3.0 if a.quick else 10.0
    if a.reps is None:
        a.reps = 1
    if a.quick:
        a.reps = 1
    if not (a.seconds > 0 and a.seconds <= 3600):
        ap.error("--seconds: give a number of seconds in (0, 3600]")
    if a.sessions < 1 or a.rcpts < 1 or a.reps < 1:
        ap.error("--sessions, --rcpts and --reps must be at least 1")
    if not re.fullmatch(r"[0-9A-Za-z:*,.\-]+", a.size):
        ap.error(f"--size: {a.size!r} is not a ringload size (N, N-M, exp:MEAN[:MAX], 1k*90,1m*1)")
    if not shutil.which("taskset"):
        ap.error("taskset is missing (util-linux)")
    a.bin = os.path.abspath(a.bin) if a.bin else os.path.join(TARGET, "release")
    return a, ap


def check_binaries(a, ap):
    for tool in ("ringrelay", "ringload"):
        path = os.path.join(a.bin, tool)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            ap.error(f"{path} is missing or not executable: pass --bin DIR (the folder holding "
                     "ringrelay and ringload), or --build to build them with cargo")


# ---- processes ----------------------------------------------------------------------------

def cpu_seconds(pid):
    """CPU time of every thread of pid: /proc/PID/task/*/schedstat (ns), else /proc/PID/stat."""
    total, seen = 0, False
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
                    seen = True
            except (FileNotFoundError, ProcessLookupError):
                pass  # a thread that just exited
    except (FileNotFoundError, ValueError, IndexError):
        seen = False
    if seen:
        return total / 1e9
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Server:
    """One pinned ringrelay process (sink or proxy); its listening port is read from stderr."""

    def __init__(self, a, tmp, mode, io, shards, cpus, extra=()):
        self.label = f"{mode} io={io} shards={shards} cpus={cpu_list(cpus)}"
        self.out_path = os.path.join(tmp, f"{mode}-{os.getpid()}-{time.monotonic_ns()}.out")
        self.out = open(self.out_path, "w+")
        cmd = ["taskset", "-c", cpu_list(cpus), os.path.join(a.bin, "ringrelay"), mode,
               "--listen", "127.0.0.1:0", "--shards", str(shards), "--io", io,
               "--metrics-listen", "none"]
        if a.rcpts > 100:
            cmd += ["--max-recipients", str(a.rcpts)]
        cmd += list(extra)
        self.cmd = cmd
        self.p = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.PIPE, text=True,
                                  stdin=subprocess.DEVNULL)
        CHILDREN.append(self.p)
        self.err = []
        self.port = None
        got = threading.Event()

        def drain():  # read the listening line, then keep stderr from ever blocking the server
            for line in self.p.stderr:
                self.err.append(line)
                del self.err[:-50]
                m = re.search(r"ringrelay: listening on \S+:(\d+)", line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                    got.set()
            got.set()

        threading.Thread(target=drain, daemon=True).start()
        got.wait(START_TIMEOUT)
        if self.port is None:
            self.stop()
            why = "".join(self.err).strip() or f"no listening line in {START_TIMEOUT} s"
            raise RuntimeError(f"{self.label} did not start: {why[-400:]}")
        self.pid = self.p.pid  # taskset execs, so this is ringrelay itself

    def cpu(self):
        return cpu_seconds(self.pid)

    def stop(self):
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; returns ringrelay's stdout (its summary)."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=STOP_TIMEOUT)
        if self.p in CHILDREN:
            CHILDREN.remove(self.p)
        self.out.seek(0)
        text = self.out.read()
        self.out.close()
        try:
            os.unlink(self.out_path)
        except OSError:
            pass
        return text


def run_ringload(a, tmp, port):
    """Runs ringload pinned to the load CPUs; returns (its JSON, exit code, wall s, CPU s)."""
    out = os.path.join(tmp, "ringload.json")
    if os.path.exists(out):
        os.unlink(out)
    threads = min(len(a.load), a.sessions)
    cmd = ["taskset", "-c", cpu_list(a.load), os.path.join(a.bin, "ringload"),
           "-t", f"127.0.0.1:{port}", "-s", str(a.sessions), "-d", f"{a.seconds:g}",
           "--threads", str(threads), "--size", a.size, "--rcpts", str(a.rcpts),
           "--timeout", str(REPLY_TIMEOUT), "--json", out, "--no-progress", "-q"]
    if not a.pipelining:
        cmd.append("--no-pipelining")
    errf = tempfile.TemporaryFile(mode="w+", dir=tmp)
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf, stdin=subprocess.DEVNULL)
    CHILDREN.append(p)
    deadline = time.monotonic() + a.seconds + LOAD_SLACK
    try:
        while True:
            # wait4 rather than wait: its rusage is ringload's own CPU time.
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                p.kill()
                os.wait4(p.pid, 0)
                p.returncode = -9
                raise RuntimeError(f"ringload ran past {a.seconds + LOAD_SLACK:g} s: killed")
            time.sleep(0.02)
    finally:
        if p in CHILDREN:
            CHILDREN.remove(p)
    wall = time.perf_counter() - t0
    errf.seek(0)
    err = errf.read().strip()
    errf.close()
    try:
        with open(out) as f:
            j = json.load(f)
    except (OSError, ValueError):
        raise RuntimeError(f"ringload exited {p.returncode} without JSON: {err[-400:]}")
    return j, p.returncode, wall, ru.ru_utime + ru.ru_stime, err


def sink_summary(text):
    m = re.search(r"sink: sessions=(\d+) messages=(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else (None, None)


# ---- one cell -----------------------------------------------------------------------------

def upstream_place(a, k):
    """Where proxy mode's upstream sink runs for K proxy shards: (cpus, shards, kind)."""
    if not a.upstream_on_load and len(a.server) >= 2 * k:
        return a.server[k:2 * k], k, "separate"
    if a.upstream and not a.upstream_on_load:
        return a.upstream, min(k, len(a.upstream)), "upstream-cpus"
    return a.load, min(k, len(a.load)), "load"


def run_once(a, tmp, mode, io, k):
    cpus = a.server[:k]
    servers = []
    try:
        up = None
        extra = []
        if mode == "proxy":
            ucpus, ushards, kind = upstream_place(a, k)
            up = Server(a, tmp, "sink", io, ushards, ucpus)
            servers.append(up)
            extra = ["--upstream", f"127.0.0.1:{up.port}", "--pool-max", str(a.sessions)]
        srv = Server(a, tmp, mode, io, k, cpus, extra)
        servers.append(srv)
        c0 = srv.cpu()
        u0 = up.cpu() if up else 0.0
        j, rc, wall, load_cpu, err = run_ringload(a, tmp, srv.port)
        died = [s.label for s in servers if s.p.poll() is not None]
        cpu = srv.cpu() - c0
        ucpu = (up.cpu() - u0) if up else None
    finally:
        outs = []
        for s in reversed(servers):  # the proxy first, then its upstream
            try:
                outs.append(s.stop())
            except Exception as e:  # keep stopping the others
                outs.append("")
                log(f"stopping {s.label}: {e}")
    msgs = j["acknowledged"]
    res = {
        "rate": j["msgs_per_s"], "msgs": msgs, "failed": j["failed"], "elapsed_s": j["elapsed_s"],
        "wall_s": wall, "connections": j["connections"],
        "cpu_s": cpu, "cpu_per_10k": cpu / max(msgs, 1) * 1e4,
        "server_busy": cpu / (wall * k),
        "load_cpu_s": load_cpu,
        "p99_ms": j["latency_us"].get("transaction", {}).get("p99", 0) / 1000.0,
        "p50_ms": j["latency_us"].get("transaction", {}).get("p50", 0) / 1000.0,
        "ringload_rc": rc, "errors": j.get("errors"), "fatal": j.get("fatal"),
    }
    load_busy_cpu = load_cpu
    problems = [f"{d} exited during the run" for d in died]
    if up:
        ucpus, ushards, kind = upstream_place(a, k)
        _, delivered = sink_summary(outs[1])
        res.update({"upstream": kind, "upstream_cpus": cpu_list(ucpus), "upstream_shards": ushards,
                    "upstream_cpu_s": ucpu, "upstream_cpu_per_10k": ucpu / max(msgs, 1) * 1e4,
                    "upstream_busy": ucpu / (wall * len(ucpus)), "upstream_messages": delivered})
        if kind == "load":
            load_busy_cpu += ucpu
        if delivered is None:
            problems.append("upstream printed no summary")
        elif delivered < msgs:
            problems.append(f"upstream got {delivered} messages, ringload saw {msgs} acknowledged")
    res["load_busy"] = load_busy_cpu / (wall * len(a.load))
    if rc != 0 or j["failed"] or j.get("fatal"):
        problems.append(f"ringload exit {rc}, {j['failed']} failed, errors {j.get('errors')}, "
                        f"fatal {j.get('fatal')} {err[-200:]}".strip())
    if msgs == 0:
        problems.append("no message acknowledged")
    res["ok"] = not problems
    res["error"] = "; ".join(problems) or None
    return res


def summarize(mode, io, k, runs, cpus):
    good = [r for r in runs if r.get("ok")] or runs

    def med(key):
        vals = [r[key] for r in good if r.get(key) is not None]
        return statistics.median(vals) if vals else None
    c = {"mode": mode, "io": io, "shards": k, "cpus": cpu_list(cpus), "reps": len(runs),
         "ok": bool(runs) and all(r.get("ok") for r in runs), "skipped": None,
         "runs": runs}
    for key in ("rate", "cpu_per_10k", "server_busy", "load_busy", "p99_ms", "p50_ms",
                "upstream_cpu_per_10k", "upstream_busy"):
        c[key] = med(key)
    first = runs[0] if runs else {}
    for key in ("upstream", "upstream_cpus", "upstream_shards"):
        if key in first:
            c[key] = first[key]
    errs = [r.get("error") for r in runs if r.get("error")]
    c["error"] = errs[0] if errs else None
    return c


# ---- report -------------------------------------------------------------------------------

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "?"
    except Exception:
        return "?"


def smt_notes(a):
    """Hyperthread siblings shared between the sets (or inside the server set) skew scaling."""
    def siblings(c):
        try:
            with open(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list") as f:
                return set(parse_cpus(f.read().strip(), "siblings"))
        except (OSError, ValueError):
            return {c}
    notes = []
    server, load = set(a.server), set(a.load)
    cross = sorted(c for c in server if siblings(c) & load)
    if cross:
        notes.append(f"server CPU(s) {cpu_list(cross)} share a physical core (SMT sibling) with "
                     "load CPUs")
    inner = sorted(c for c in server if (siblings(c) - {c}) & server)
    if inner:
        notes.append(f"server CPUs {cpu_list(inner)} include SMT siblings of each other: shards "
                     "on siblings share a core, so scaling there is below linear by design")
    return notes


def machine(a):
    ver = sh(f"{os.path.join(a.bin, 'ringrelay')} --version")
    model = sh("lscpu | sed -n 's/^Model name: *//p'")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{model}, {os.cpu_count()} CPUs",
        "memory": sh("free -g | awk '/^Mem:/{print $2\" GiB\"}'"),
        "kernel": platform.release(),
        "os": sh(". /etc/os-release; echo $PRETTY_NAME"),
        "ringrelay": ver,
        "commit": sh(f"git -C {ROOT} rev-parse --short HEAD 2>/dev/null"),
        "load_before": sh("cut -d' ' -f1-3 /proc/loadavg"),
        "smt": smt_notes(a),
    }


def fmt(v, spec, dash="–"):
    return dash if v is None else format(v, spec)


def pct(v):
    return "–" if v is None else f"{v * 100:.0f}%"


def lookup(cells, mode, io, k):
    return next((c for c in cells if (c["mode"], c["io"], c["shards"]) == (mode, io, k)), None)


def rate_of(cells, mode, io, k):
    c = lookup(cells, mode, io, k)
    return c["rate"] if c and c["ok"] and c["rate"] else None


def verdict(a, cells):
    """The goal lines: [(text, met or None when not measured)]."""
    out = []
    room = len(a.server) >= GOAL_SHARDS and GOAL_SHARDS in a.shard_counts
    why = (f"not measured: --server-cpus has {len(a.server)} CPU(s), the goal needs "
           f"{GOAL_SHARDS}" if len(a.server) < GOAL_SHARDS else
           f"not measured: --shards has no {GOAL_SHARDS}")
    for mode in a.mode_list:
        for io in a.ios:
            if not room:
                out.append((f"{mode} {io}: scaling at {GOAL_SHARDS} shards ≥ {GOAL_SCALING}×: "
                            f"{why}", None))
                continue
            r1, r8 = rate_of(cells, mode, io, 1), rate_of(cells, mode, io, GOAL_SHARDS)
            if not (r1 and r8):
                out.append((f"{mode} {io}: scaling at {GOAL_SHARDS} shards ≥ {GOAL_SCALING}×: "
                            "not measured (a cell failed or 1 shard was not run)", None))
                continue
            x = r8 / r1
            out.append((f"{mode} {io}: scaling at {GOAL_SHARDS} shards {x:.2f}× "
                        f"(goal ≥ {GOAL_SCALING}×): {'met' if x >= GOAL_SCALING else 'NOT met'}",
                        x >= GOAL_SCALING))
        if "uring" in a.ios and "epoll" in a.ios:
            if not room:
                out.append((f"{mode}: uring ≥ {GOAL_URING}× epoll at {GOAL_SHARDS} shards: {why}",
                            None))
                continue
            u = rate_of(cells, mode, "uring", GOAL_SHARDS)
            e = rate_of(cells, mode, "epoll", GOAL_SHARDS)
            if not (u and e):
                out.append((f"{mode}: uring ≥ {GOAL_URING}× epoll at {GOAL_SHARDS} shards: not "
                            "measured (a cell failed)", None))
                continue
            x = u / e
            out.append((f"{mode}: uring/epoll at {GOAL_SHARDS} shards {x:.2f}× (goal ≥ "
                        f"{GOAL_URING}×): {'met' if x >= GOAL_URING else 'NOT met'}",
                        x >= GOAL_URING))
    return out


def markdown(a, m, cells, argv):
    o = [f"# Scaling benchmark, {m['date']}\n"]
    o.append(f"Generated by `bench/scaling.py {' '.join(argv)}`. Machine: {m['cpu']}, "
             f"{m['memory']}, {m['os']}, kernel {m['kernel']}; {m['ringrelay']} "
             f"(commit {m['commit']}). Load average before the run: {m['load_before']}.\n")
    threads = min(len(a.load), a.sessions)
    o.append(
        f"Setup: server CPUs {cpu_list(a.server)}, K shards pinned (`taskset -c`) to the first K "
        f"of them; ringload on CPUs {cpu_list(a.load)} ({threads} thread(s)), closed loop, "
        f"{a.sessions} sessions, {a.seconds:g} s per cell, messages of {a.size} octets, "
        f"{a.rcpts} recipient(s), PIPELINING {'on' if a.pipelining else 'off'}; a fresh server "
        f"per cell, {a.reps} rep(s) (median shown); loopback TCP. **msgs/s**: ringload's figure "
        "(acknowledged messages / first connect to last acknowledgement). **CPU s/10k**: CPU "
        "seconds of the server under test (all threads, /proc/PID/task/*/schedstat) per 10,000 "
        "messages (proxy rows: the proxy alone). **busy**: CPU time / (wall time × CPUs pinned "
        "to): server near 100% = the server is the limit; load (ringload, plus the upstream sink "
        "when it shares the load CPUs) near 100% = the figure is the load side's limit. "
        "**p99**: ringload's transaction phase (MAIL written to final reply). ×1 = msgs/s over "
        "the same mode and io at 1 shard.\n")
    if "proxy" in a.mode_list:
        places = []
        for k in a.shard_counts:
            if k > len(a.server):
                continue
            ucpus, ushards, kind = upstream_place(a, k)
            where = {"separate": "its own server CPUs", "upstream-cpus": "--upstream-cpus",
                     "load": "the load CPUs, shared with ringload"}[kind]
            places.append(f"K={k}: {ushards} shard(s) on CPU {cpu_list(ucpus)} ({where})")
        o.append("Proxy upstream: a `ringrelay sink` with the proxy's io, " + "; ".join(places)
                 + f". The proxy runs with `--pool-max {a.sessions}` (its default, 64 per "
                 "shard, answers 451 beyond it at once) and each run checks that the upstream "
                 "counted every acknowledged message.\n")
    if m["smt"]:
        o.append("**Topology caution**: " + "; ".join(m["smt"]) + ".\n")
    for mode in a.mode_list:
        o.append(f"\n## {mode}\n")
        hdr = "| io | shards | CPUs | msgs/s | ×1 | CPU s/10k | server busy | load busy | p99 ms |"
        sep = "|---|---:|---|---:|---:|---:|---:|---:|---:|"
        if mode == "proxy":
            hdr += " upstream | upstream CPU s/10k | upstream busy |"
            sep += "---|---:|---:|"
        o += [hdr + " ok |", sep + "---|"]
        for io in a.ios:
            for k in a.shard_counts:
                c = lookup(cells, mode, io, k)
                if c is None:
                    continue
                if c["skipped"]:
                    cols = hdr.count("|") + 1  # and the ok column
                    row = f"| {io} | {k} | – | skipped: {c['skipped']} |"
                    o.append(row + " |" * (cols - row.count("|")))
                    continue
                r1 = rate_of(cells, mode, io, 1)
                x = f"{c['rate'] / r1:.2f}×" if r1 and c["ok"] and c["rate"] else "–"
                row = (f"| {io} | {k} | {c['cpus']} | {fmt(c['rate'], ',.0f')} | {x} | "
                       f"{fmt(c['cpu_per_10k'], '.3f')} | {pct(c['server_busy'])} | "
                       f"{pct(c['load_busy'])} | {fmt(c['p99_ms'], '.2f')} |")
                if mode == "proxy":
                    up = (f"{c.get('upstream_shards')}×{c.get('upstream')} "
                          f"({c.get('upstream_cpus')})" if c.get("upstream") else "–")
                    row += (f" {up} | {fmt(c.get('upstream_cpu_per_10k'), '.3f')} | "
                            f"{pct(c.get('upstream_busy'))} |")
                o.append(row + (" yes |" if c["ok"] else f" NO: {c['error']} |"))
    # Summary: msgs/s per shard count, scaling and uring/epoll.
    o.append("\n## Summary\n")
    ks = a.shard_counts
    more = [k for k in ks if k > 1]
    o.append("| mode | io | " + " | ".join(f"{k} shard{'s' if k > 1 else ''}" for k in ks)
             + "".join(f" | ×{k}/1" for k in more) + " |")
    o.append("|---|---|" + "---:|" * len(ks) + "---:|" * len(more))
    for mode in a.mode_list:
        for io in a.ios:
            rates = [rate_of(cells, mode, io, k) for k in ks]
            r1 = rate_of(cells, mode, io, 1)
            cols = [fmt(r, ",.0f", "skipped" if k > len(a.server) else "–")
                    for r, k in zip(rates, ks)]
            xs = [f"{r / r1:.2f}×" if r and r1 else ("skipped" if k > len(a.server) else "–")
                  for r, k in zip(rates, ks) if k > 1]
            o.append(f"| {mode} | {io} | " + " | ".join(cols) + "".join(f" | {x}" for x in xs)
                     + " |")
    if "uring" in a.ios and "epoll" in a.ios:
        o.append("\n| mode | " + " | ".join(f"uring/epoll at {k}" for k in ks) + " |")
        o.append("|---|" + "---:|" * len(ks))
        for mode in a.mode_list:
            vals = []
            for k in ks:
                u, e = rate_of(cells, mode, "uring", k), rate_of(cells, mode, "epoll", k)
                vals.append(f"{u / e:.2f}×" if u and e else
                            ("skipped" if k > len(a.server) else "–"))
            o.append(f"| {mode} | " + " | ".join(vals) + " |")
    o.append("\n## Verdict\n")
    v = verdict(a, cells)
    enough = len(a.server) >= GOAL_SHARDS and len(a.load) >= 1
    for text, met in v:
        o.append(f"- {text}")
    if not enough:
        o.append(f"- The goals are for {GOAL_SHARDS} server CPUs (e.g. --server-cpus 0-7 "
                 f"--load-cpus 8-15 on 16 cores); this run had {len(a.server)}: a smoke run, "
                 "not a verdict.")
    flagged = [c for c in cells if not c["skipped"] and c["ok"] and
               ((c["load_busy"] or 0) >= BUSY_WARN or (c.get("upstream_busy") or 0) >= BUSY_WARN)]
    if flagged:
        o.append("- Caution: the load side (or a proxy's upstream) was ≥ "
                 f"{BUSY_WARN * 100:.0f}% busy in " + ", ".join(
                     f"{c['mode']} {c['io']} K={c['shards']}" for c in flagged)
                 + ": those figures may be the load side's limit, not the server's.")
    return "\n".join(o) + "\n"


# ---- main ---------------------------------------------------------------------------------

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a, ap = parse_args(argv)
    # SIGINT too: a shell that starts us in the background would have it ignored otherwise.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    if a.build:
        log("building ringrelay and ringload (cargo build --release)...")
        try:
            subprocess.run(["cargo", "build", "--release", "--bin", "ringrelay", "--bin",
                            "ringload"], cwd=ROOT, check=True, timeout=3600)
        except (OSError, subprocess.SubprocessError) as e:
            sys.exit(f"scaling.py: cargo build failed: {e}")
    check_binaries(a, ap)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:  # 2 × sessions sockets in a proxy, more in ringload: inherited by the children
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    m = machine(a)
    for note in m["smt"]:
        log(f"scaling.py: caution: {note}")
    cells = []
    plan = []
    for mode in a.mode_list:
        for k in a.shard_counts:
            for io in a.ios:
                if k > len(a.server):
                    c = summarize(mode, io, k, [], [])
                    c["skipped"] = f"{k} shards need {k} server CPUs, --server-cpus has " \
                                   f"{len(a.server)}"
                    c["ok"] = False
                    cells.append(c)
                    log(f"{mode:<5} {io:<5} shards={k:<2} skipped: {c['skipped']}")
                else:
                    plan.append((mode, k, io))
    est = len(plan) * a.reps * (a.seconds + 1.5)
    log(f"scaling.py: {len(plan)} cell(s) × {a.reps} rep(s), about {est:.0f} s; server CPUs "
        f"{cpu_list(a.server)}, load CPUs {cpu_list(a.load)}, binaries in {a.bin}")
    runs = {cell: [] for cell in plan}
    started = time.time()
    interrupted = None
    tmp = tempfile.mkdtemp(prefix="ringrelay-scaling-")
    try:
        for rep in range(a.reps):
            for (mode, k, io) in plan:
                try:
                    r = run_once(a, tmp, mode, io, k)
                except (Interrupted, KeyboardInterrupt):
                    raise
                except Exception as e:  # a server that cannot start (no io_uring...), a timeout
                    r = {"ok": False, "error": str(e)[:500]}
                runs[(mode, k, io)].append(r)
                extra = ""
                if mode == "proxy" and r.get("upstream"):
                    extra = (f" upstream {r['upstream_shards']}×{r['upstream']}"
                             f"({r['upstream_cpus']}) busy {pct(r.get('upstream_busy'))}")
                log(f"{mode:<5} {io:<5} shards={k:<2} rep {rep + 1}: "
                    f"{fmt(r.get('rate'), '>10,.0f')} msg/s cpu/10k "
                    f"{fmt(r.get('cpu_per_10k'), '.3f')} server busy {pct(r.get('server_busy'))} "
                    f"load busy {pct(r.get('load_busy'))} p99 {fmt(r.get('p99_ms'), '.2f')} ms"
                    + extra + ("" if r.get("ok") else f"  FAILED: {r.get('error')}"))
    except (Interrupted, KeyboardInterrupt) as e:
        interrupted = str(e) or "SIGINT"
        status = 128 + getattr(e, "signum", signal.SIGINT)
        log(f"scaling.py: interrupted ({interrupted}); servers stopped, writing what ran")
    finally:
        for p in list(CHILDREN):  # anything still running (an interrupt mid-cell)
            try:
                p.kill()
                p.wait(timeout=5)
            except Exception:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
    for (mode, k, io) in plan:
        if runs[(mode, k, io)]:
            cells.append(summarize(mode, io, k, runs[(mode, k, io)], a.server[:k]))
    m["duration_s"] = round(time.time() - started, 1)
    md = markdown(a, m, cells, argv)
    md += f"\nWhole run: {m['duration_s']} s" + (f" (interrupted: {interrupted})" if interrupted
                                                 else "") + ".\n"
    os.makedirs(a.out, exist_ok=True)
    day = datetime.date.today().isoformat()
    base = os.path.join(a.out, f"{day}-{a.tag}")
    with open(base + ".md", "w") as f:
        f.write(md)
    doc = {"machine": m, "argv": argv,
           "setup": {"server_cpus": a.server, "load_cpus": a.load, "shards": a.shard_counts,
                     "io": a.ios, "modes": a.mode_list, "seconds": a.seconds,
                     "sessions": a.sessions, "size": a.size, "rcpts": a.rcpts,
                     "pipelining": a.pipelining, "reps": a.reps, "bin": a.bin,
                     "upstream_cpus": a.upstream_cpus},
           "goals": {"shards": GOAL_SHARDS, "scaling": GOAL_SCALING, "uring_over_epoll": GOAL_URING},
           "verdict": [{"text": t, "met": met} for t, met in verdict(a, cells)],
           "cells": cells}
    with open(base + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    print(md)
    log(f"scaling.py: wrote {base}.md and {base}.json")
    if interrupted:
        return status
    ran = [c for c in cells if not c["skipped"]]
    return 0 if ran and all(c["ok"] for c in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
