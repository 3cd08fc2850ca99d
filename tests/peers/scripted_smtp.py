"""A misbehaving SMTP server for client failure tests (one connection at a time, bounded).

usage: scripted_smtp.py PORT MODE
  refuse-sender   550 5.1.0 at MAIL
  refuse-rcpt     550 5.1.1 for recipients containing "bad", 250 otherwise
  drop-mid-data   354, reads a little of the message, then closes the connection
  silent          greets, then never answers
  garbage         greets, then answers EHLO with a non-SMTP line
  421-rcpt        421 at the first RCPT, then closes
  stall-data      354, then stops reading (the client's writes must time out)
Prints "ready" once listening; exits after 60 s at the latest.
"""
import socket
import sys
import threading
import time

port, mode = int(sys.argv[1]), sys.argv[2]
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(16)
srv.settimeout(60)
print("ready", flush=True)
deadline = time.time() + 60


def lines(conn):
    buf = b""
    while True:
        while b"\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
        line, buf = buf.split(b"\r\n", 1)
        yield line, buf


def serve(conn):
    conn.settimeout(30)
    send = lambda s: conn.sendall(s.encode() + b"\r\n")
    send("220 scripted ESMTP")
    if mode == "silent":
        time.sleep(30)
        return
    in_data = False
    for line, rest in lines(conn):
        verb = line[:4].upper()
        if in_data:
            if mode == "stall-data":
                time.sleep(30)
                return
            if mode == "drop-mid-data":
                conn.close()
                return
            if line == b".":
                in_data = False
                send("250 2.0.0 queued")
            continue
        if verb == b"EHLO":
            if mode == "garbage":
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                continue
            send("250-scripted\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES")
        elif verb == b"HELO":
            send("250 scripted")
        elif verb == b"MAIL":
            if mode == "refuse-sender":
                send("550 5.1.0 sender rejected")
            else:
                send("250 2.1.0 ok")
        elif verb == b"RCPT":
            if mode == "421-rcpt":
                send("421 4.3.0 going away")
                conn.close()
                return
            if mode == "refuse-rcpt" and b"bad" in line:
                send("550 5.1.1 no such user")
            else:
                send("250 2.1.5 ok")
        elif verb == b"DATA":
            in_data = True
            send("354 go ahead")
        elif verb == b"RSET":
            send("250 2.0.0 ok")
        elif verb == b"QUIT":
            send("221 2.0.0 bye")
            return
        else:
            send("500 5.5.1 what")


while time.time() < deadline:
    try:
        conn, _ = srv.accept()
    except socket.timeout:
        break
    threading.Thread(target=lambda c=conn: (serve(c), c.close()), daemon=True).start()
