"""A scripted upstream (smarthost) for the relay's fault tests. Threaded, one thread per
connection, everything bounded in time.

usage: relay_upstream.py PORT MODE [--lifetime SECS]

In every mode MAIL from an address containing "refused" gets 550 5.7.1, and RCPT without an
accepted MAIL gets 503 5.5.1 (DATA without a recipient gets 554 5.5.1), as a real server does.

MODE says how it misbehaves:
  ok            a well-behaved server
  refuse-rcpt   RCPT: 550 5.1.1 if the address contains "bad", 450 4.2.1 if it contains
                "busy", 250 otherwise
  rcpt-421      RCPT: "421 4.3.2 shutting down" and close if the address contains "bye"
  data-554      554 5.3.0 to DATA          data-451   451 4.3.0 to DATA
  eod-554       554 5.6.0 after the dot    eod-452    452 4.3.1 after the dot
  data-334      a broken server: 334 to DATA (not 354), then treats what follows as commands
  data-250      a broken server: 250 to DATA, then treats what follows as commands
  mute          accepts the TCP connection and never says anything
  hang-eod      a normal server that never answers the final dot
  slow-eod      a normal server that answers the final dot after 1.5 s (prints SLOW k first)
  drop-mid-data 354, reads at least 64 octets of the message, then closes the connection
  stall-data    354, then stops reading (the relay's writes must time out)
  no-ext        EHLO lists no extension; MAIL or RCPT parameters get 555 5.5.4 (RFC 5321
                §4.1.1.11: parameters only for extensions the server offered)
  helo-only     EHLO is 502; HELO works; MAIL or RCPT parameters get 501 5.5.4
  idle-421      a normal server that, 0.3 s after each 250 to a final dot, sends
                "421 4.4.2 idle, closing" and closes the connection
  idle-close    the same, but closes without a word
  extra-after-dot   a server that follows its 250 to a final dot with an unsolicited
                "250 2.0.0 extra" at once, then serves on
  extra-while-idle  the same line 0.1 s later, while the connection sits idle
  xforward      a normal server that also offers XFORWARD (Postfix's) and answers it 250
  xclient       a normal server that also offers XCLIENT (Postfix's): 220 to it, as a new greeting
  mail-354      a broken server: 354 to MAIL (no 3xx answers MAIL)
  rcpt-354      a broken server: 354 to RCPT
  slow-mail     a normal server that waits 0.3 s before answering MAIL, then reports how
                many complete lines were already waiting behind it (pipelined)
  no-pipelining a normal server without PIPELINING in its EHLO reply; before answering each
                MAIL, RCPT and DATA it waits 0.05 s and reports the lines waiting behind it
  chaos         each DATA picks one of ok (most often), extra-after-dot, extra-while-idle,
                idle-421, idle-close, drop-mid-data, data-451 and eod-452 at random
                (--seed, per connection), for soak tests
With --record FILE every delivered message is appended to FILE before its 250 is sent.

Output lines (flushed as they happen):
  ready
  CONNECT k                     connection k (from 1) accepted
  CMD k <line>                  a command line (not message content)
  BUFFERED k <verb> <n>         (slow-mail, no-pipelining) n complete lines had arrived
                                behind that command before it was answered
  DELIVERED k <sha256> <size> <token>
                                the final dot was answered 250 (the message counts as
                                delivered); <token> is the value of the first X-Test-Id:
                                header of the content, or "-"
  REFUSED k <code> <token>      the final dot was answered with a refusal
  ABORTED k <octets>            the connection ended inside DATA, without the final dot
  CLOSED k
Exits on stdin EOF or after --lifetime seconds (default 120), printing "exit".
"""
import argparse
import hashlib
import random
import re
import socket
import sys
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("port", type=int)
ap.add_argument("mode")
ap.add_argument("--lifetime", type=float, default=120)
ap.add_argument("--record")
ap.add_argument("--seed", type=int, default=1)
args = ap.parse_args()
mode = args.mode

CHAOS = [
    ("ok", 60), ("extra-after-dot", 6), ("extra-while-idle", 6), ("idle-421", 6),
    ("idle-close", 6), ("drop-mid-data", 6), ("data-451", 5), ("eod-452", 5),
]

out_lock = threading.Lock()
record_lock = threading.Lock()


def record(content):
    if args.record:
        with record_lock, open(args.record, "ab") as f:
            f.write(content + b"\r\n\r\n")
            f.flush()


def say(line):
    with out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def token_of(content):
    head = content.split(b"\r\n\r\n", 1)[0]
    m = re.search(rb"(?im)^X-Test-Id:[ \t]*(\S+)", head)
    return m.group(1).decode("ascii", "replace") if m else "-"


class Conn:
    def __init__(self, sock, k):
        self.s = sock
        self.k = k
        self.buf = b""
        self.rng = random.Random(args.seed * 100003 + k)
        sock.settimeout(60)

    def pick(self):
        """The behaviour for this message: the mode, or in chaos mode a random one."""
        if mode != "chaos":
            return mode
        return self.rng.choices([m for m, _ in CHAOS], [w for _, w in CHAOS])[0]

    def send(self, text):
        self.s.sendall(text.encode() + b"\r\n")

    def fill(self):
        data = self.s.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def line(self):
        while b"\r\n" not in self.buf:
            self.fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def waiting_lines(self, pause):
        """Waits, then counts the complete lines that arrived behind the current one."""
        time.sleep(pause)
        self.s.setblocking(False)
        try:
            while True:
                d = self.s.recv(65536)
                if not d:
                    break
                self.buf += d
        except (BlockingIOError, InterruptedError):
            pass
        finally:
            self.s.settimeout(60)
        return self.buf.count(b"\r\n")

    def data(self, m):
        """Reads the message up to the final dot; returns the unstuffed content (None when
        behaviour `m` drops the connection instead)."""
        lines = []
        total = 0
        try:
            while True:
                line = self.line()
                total += len(line) + 2
                if m == "drop-mid-data" and total >= 64:
                    return None
                if line == b".":
                    break
                if line.startswith(b"."):
                    line = line[1:]
                lines.append(line + b"\r\n")
        except EOFError:
            say("ABORTED %d %d" % (self.k, total))
            raise
        return b"".join(lines)

    def serve(self):
        k = self.k
        if mode == "mute":
            time.sleep(60)
            return
        self.send("220 scripted.upstream ESMTP")
        rcpts = 0
        mail_ok = False
        while True:
            line = self.line()
            say("CMD %d %s" % (k, line.decode("utf-8", "replace")))
            verb = line[:4].upper()
            pause = {"slow-mail": {b"MAIL": 0.3}, "no-pipelining": dict.fromkeys((b"MAIL", b"RCPT", b"DATA"), 0.05)}
            if verb in pause.get(mode, {}):
                n = self.waiting_lines(pause[mode][verb])
                say("BUFFERED %d %s %d" % (k, verb.decode(), n))
            params = b">" in line and line.split(b">", 1)[1].strip()
            if verb in (b"MAIL", b"RCPT") and params and mode in ("no-ext", "helo-only"):
                code = "555" if mode == "no-ext" else "501"
                self.send("%s 5.5.4 parameters not offered: %s" % (code, params.decode()))
                continue
            if verb == b"EHLO" and mode == "helo-only":
                self.send("502 5.5.1 EHLO not implemented")
            elif verb == b"EHLO" and mode == "no-ext":
                self.send("250 scripted.upstream")
            elif verb in (b"EHLO", b"LHLO"):
                xforward = "250-XFORWARD NAME ADDR PROTO HELO\r\n" if mode == "xforward" else ""
                if mode == "xclient":
                    xforward = "250-XCLIENT NAME ADDR PROTO HELO\r\n"
                pipelining = "" if mode == "no-pipelining" else "250-PIPELINING\r\n"
                self.send(
                    "250-scripted.upstream\r\n" + pipelining + "250-8BITMIME\r\n"
                    + xforward
                    + "250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250 SIZE 67108864"
                )
            elif line[:9].upper() == b"XFORWARD " and mode == "xforward":
                self.send("250 2.0.0 Ok")
            elif line[:8].upper() == b"XCLIENT " and mode == "xclient":
                self.send("220 scripted.upstream ESMTP")
            elif verb == b"HELO":
                self.send("250 scripted.upstream")
            elif verb == b"MAIL" and mode == "mail-354":
                self.send("354 go ahead")
            elif verb == b"RCPT" and mode == "rcpt-354":
                self.send("354 go ahead")
            elif verb == b"MAIL" and b"refused" in line:
                mail_ok = False
                rcpts = 0
                self.send("550 5.7.1 sender refused")
            elif verb == b"MAIL":
                mail_ok = True
                rcpts = 0
                self.send("250 2.1.0 sender ok")
            elif verb == b"RCPT" and not mail_ok:
                self.send("503 5.5.1 need MAIL first")
            elif verb == b"RCPT":
                if mode == "rcpt-421" and b"bye" in line:
                    self.send("421 4.3.2 shutting down")
                    return
                if mode == "refuse-rcpt" and b"bad" in line:
                    self.send("550 5.1.1 no such user here")
                elif mode == "refuse-rcpt" and b"busy" in line:
                    self.send("450 4.2.1 mailbox busy, try later")
                else:
                    rcpts += 1
                    self.send("250 2.1.5 recipient ok")
            elif verb == b"DATA":
                m = self.pick()
                if m == "data-554":
                    self.send("554 5.3.0 no data for you")
                    continue
                if m == "data-451":
                    self.send("451 4.3.0 cannot take data now")
                    continue
                if m == "data-334":
                    self.send("334 go on then")
                    continue
                if m == "data-250":
                    self.send("250 2.0.0 whatever")
                    continue
                if rcpts == 0:
                    self.send("554 5.5.1 no valid recipients")
                    continue
                self.send("354 go ahead")
                if m == "stall-data":
                    say("STALLED %d" % k)
                    time.sleep(60)
                    return
                content = self.data(m)
                if content is None:
                    say("DROPPED %d" % k)
                    return
                tok = token_of(content)
                if m == "hang-eod":
                    say("HANGING %d %s" % (k, tok))
                    time.sleep(60)
                    return
                if m == "slow-eod":
                    say("SLOW %d %s" % (k, tok))
                    time.sleep(1.5)
                if m == "eod-554":
                    say("REFUSED %d 554 %s" % (k, tok))
                    self.send("554 5.6.0 content refused")
                elif m == "eod-452":
                    say("REFUSED %d 452 %s" % (k, tok))
                    self.send("452 4.3.1 insufficient storage, later")
                else:
                    record(content)
                    say(
                        "DELIVERED %d %s %d %s"
                        % (k, hashlib.sha256(content).hexdigest(), len(content), tok)
                    )
                    self.send("250 2.0.0 delivered")
                    if m == "extra-after-dot":
                        self.send("250 2.0.0 extra")
                    elif m == "extra-while-idle":
                        time.sleep(0.1)
                        self.send("250 2.0.0 extra")
                    if m in ("idle-421", "idle-close"):
                        time.sleep(0.3)
                        if m == "idle-421":
                            self.send("421 4.4.2 idle, closing")
                        return
                rcpts = 0
                mail_ok = False
            elif verb == b"RSET":
                rcpts = 0
                mail_ok = False
                self.send("250 2.0.0 reset")
            elif verb == b"NOOP":
                self.send("250 2.0.0 ok")
            elif verb == b"QUIT":
                self.send("221 2.0.0 bye")
                return
            else:
                self.send("500 5.5.2 unrecognised command")


def handle(sock, k):
    say("CONNECT %d" % k)
    try:
        Conn(sock, k).serve()
    except (EOFError, OSError):
        pass
    finally:
        try:
            sock.close()
        except OSError:
            pass
        say("CLOSED %d" % k)


srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", args.port))
srv.listen(64)
srv.settimeout(0.2)
say("ready")
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
deadline = time.time() + args.lifetime
n = 0
while not stop.is_set() and time.time() < deadline:
    try:
        conn, _ = srv.accept()
    except socket.timeout:
        continue
    n += 1
    threading.Thread(target=handle, args=(conn, n), daemon=True).start()
srv.close()
say("exit")
