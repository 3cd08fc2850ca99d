"""A small SMTP server with a listen backlog of 5 that serves only its first few connections.

usage: backlog_server.py PORT SERVED
Listens with listen(5), accepts SERVED connections and serves each (greeting, EHLO without
PIPELINING, MAIL, RCPT, DATA, RSET, NOOP, QUIT) in a thread of its own, then accepts no more:
later clients complete the TCP handshake into the backlog (or wait for it) and never get a
greeting, like clients of a server at capacity. Prints "ready" once listening and
"served N messages" when its clients are gone; stops on stdin EOF or after 60 s.
"""
import socket
import sys
import threading

port, served = int(sys.argv[1]), int(sys.argv[2])
messages = 0
lock = threading.Lock()


def serve(conn):
    global messages
    f = conn.makefile("rb")
    out = lambda line: conn.sendall(line.encode() + b"\r\n")
    out("220 backlog.example ESMTP")
    while True:
        line = f.readline()
        if not line:
            break
        verb = line.split(b" ")[0].strip().upper()
        if verb in (b"EHLO", b"HELO"):
            out("250 backlog.example")
        elif verb == b"DATA":
            out("354 go ahead")
            while f.readline() not in (b".\r\n", b""):
                pass
            with lock:
                messages += 1
            out("250 queued")
        elif verb == b"QUIT":
            out("221 bye")
            break
        else:
            out("250 ok")
    conn.close()


listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", port))
listener.listen(5)
print("ready", flush=True)
threads = []
for _ in range(served):
    conn, _ = listener.accept()
    t = threading.Thread(target=serve, args=(conn,), daemon=True)
    t.start()
    threads.append(t)
for t in threads:
    t.join(60)
print("served %d messages" % messages, flush=True)
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
done.wait(60)
