#!/usr/bin/env python3
"""measure.py NAME PORT CMD... : start server pinned to CPU0, run smtp-source pinned to CPU1,
print msgs/s and server CPU s per 10k messages. Repeats given by REPS env."""
import os, subprocess, sys, time, socket
def cpu(pid):
    t = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try: t += int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
        except FileNotFoundError: pass
    return t / 1e9
def wait(port):
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(100).startswith(b"220"): s.sendall(b"QUIT\r\n"); return
        except OSError: time.sleep(0.05)
    raise SystemExit("no greeting")
name, port, cmd = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
msgs = int(os.environ.get("MSGS", "30000")); sess = os.environ.get("SESS", "20"); size = os.environ.get("SIZE", "1024")
extra = os.environ.get("SRCARGS", "").split()
p = subprocess.Popen(["taskset", "-c", "0"] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    wait(port)
    c0 = cpu(p.pid); t0 = time.time()
    if os.environ.get("GEN") == "ringload":
        subprocess.run(["taskset", "-c", "1", os.environ.get("RINGLOAD", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "target", "release", "ringload")), "-t", f"127.0.0.1:{port}", "-s", sess, "-m", str(msgs), "--size", str(int(size) + 112), "--threads", "1", "-q", "--no-progress"], check=True)
    else:
        subprocess.run(["taskset", "-c", "1", "/usr/sbin/smtp-source", "-s", sess, "-m", str(msgs), "-l", size] + extra + [f"127.0.0.1:{port}"], check=True)
    dt = time.time() - t0; c1 = cpu(p.pid)
    print(f"{name:12s} {msgs/dt:10.0f} msg/s  {(c1-c0)/msgs*1e4:6.3f} CPU s/10k")
finally:
    p.terminate(); p.wait()
