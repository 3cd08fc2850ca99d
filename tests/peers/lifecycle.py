#!/usr/bin/env python3
"""Connection-limit and shutdown scenarios.

  lifecycle.py --port P max-connections --max 5
      opens --max connections (each gets 220), then one more: it must get "421 4.3.2" and EOF;
      after one of the first ones QUITs, a new connection is served again (220).

  lifecycle.py --port P drain
      coordinates with the Rust test over stdin/stdout:
        * connection A: EHLO, then idle;
        * connection B: EHLO, MAIL, RCPT, DATA, 354, half of the message;
        * prints "READY" and waits for a line on stdin (the test sends SIGTERM to the server,
          then writes "GO");
        * new connections must stop being served (refused, or closed without a 220) within 5 s;
        * B sends the rest of its message and the final dot: it must get 250;
        * A must have received "421 4.3.2" and then EOF;
        * B says QUIT: 221 (or the server closes after the 250).
      Prints "messages=1 bytes=N probes=N served=N" (connection probes made after the signal,
      and how many of them were still served because they raced it).

  lifecycle.py --port P stuck-in-data
      opens a connection, starts DATA, sends part of a message, prints READY and then sends
      nothing more until stdin closes (used for the second-signal and drain-timeout tests).
"""

import argparse
import socket
import sys
import time

from smtpwire import Conn, check, fail, run_main, stuff

MESSAGE = b"Subject: in flight during shutdown\r\n\r\n" + b"".join(
    f"line {i:04} of the message that is in flight when SIGTERM arrives\r\n".encode() for i in range(200)
)


def cmd_max_connections(args):
    held = []
    for i in range(args.max):
        c = Conn(args.host, args.port)
        c.expect(220, f"greeting on connection {i + 1} of {args.max}")
        held.append(c)
    extra = Conn(args.host, args.port)
    r = extra.reply()
    check(r is not None, f"connection {args.max + 1}: EOF without a reply (expected 421 4.3.2)")
    check(r.code == 421, f"connection {args.max + 1}: expected 421, got {r!r}")
    check(r.enhanced() == "4.3.2", f"connection {args.max + 1}: expected 4.3.2, got {r!r}")
    extra.expect_eof(what=f"connection {args.max + 1} after 421")
    extra.close()
    # The held ones are unaffected.
    for i, c in enumerate(held):
        c.send("NOOP\r\n")
        c.expect(250, f"NOOP on held connection {i + 1}")
    # Free one slot: a new connection is served again (the server may need a moment to notice).
    held[0].send("QUIT\r\n")
    held[0].expect(221, "QUIT")
    held[0].expect_eof(what="after QUIT")
    held[0].close()
    deadline = time.monotonic() + 5
    while True:
        c = Conn(args.host, args.port)
        r = c.reply()
        if r is not None and r.code == 220:
            held[0] = c
            break
        c.close()
        check(time.monotonic() < deadline, f"after a slot was freed, still refused: {r!r}")
        time.sleep(0.1)
    for c in held:
        c.send("QUIT\r\n")
        c.expect(221, "QUIT")
        c.close()
    print(f"limit {args.max} enforced")


def still_accepting(args):
    """True if a new connection is served with a 220 greeting."""
    try:
        c = Conn(args.host, args.port, timeout=1.0)
    except (ConnectionRefusedError, ConnectionResetError):
        return False
    except socket.timeout:
        return False
    try:
        r = c.reply()
    except (socket.timeout, ConnectionResetError):
        return False
    finally:
        c.close()
    return r is not None and r.code == 220


def open_in_data(args):
    b = Conn(args.host, args.port, timeout=15)
    b.expect(220, "B greeting")
    b.ehlo("busy.example")
    b.send("MAIL FROM:<b@example.org>\r\nRCPT TO:<r@example.org>\r\nDATA\r\n")
    b.expect(250, "B MAIL")
    b.expect(250, "B RCPT")
    b.expect(354, "B DATA")
    return b


def cmd_drain(args):
    a = Conn(args.host, args.port, timeout=15)
    a.expect(220, "A greeting")
    a.ehlo("idle.example")
    b = open_in_data(args)
    wire = stuff(MESSAGE)
    half = len(wire) // 2
    b.send(wire[:half])
    print("READY", flush=True)
    line = sys.stdin.readline()
    check(line.strip() == "GO", f"expected GO on stdin, got {line!r}")

    # Probe until a new connection is no longer served. Probes that raced the signal and were
    # served (or merely accepted) are sessions too: report how many, for the sink's count.
    deadline = time.monotonic() + 5
    probes = served = 0
    while True:
        probes += 1
        if not still_accepting(args):
            break
        served += 1
        check(time.monotonic() < deadline, "new connections are still served 5 s after SIGTERM")
        time.sleep(0.1)

    b.send(wire[half:])
    r = b.reply()
    check(r is not None, "B: connection closed before the reply to the final dot")
    check(r.code == 250, f"B: message in flight during shutdown: expected 250, got {r!r}")

    r = a.reply()
    check(r is not None, "A (idle): EOF without a 421")
    check(r.code == 421, f"A (idle): expected 421, got {r!r}")
    check(r.enhanced() == "4.3.2", f"A (idle): expected 4.3.2, got {r!r}")
    a.expect_eof(what="A after 421")

    try:
        b.send("QUIT\r\n")
        r = b.reply()
        check(r is None or r.code in (221, 421), f"B QUIT: expected 221, got {r!r}")
    except (BrokenPipeError, ConnectionResetError):
        pass
    print(f"messages=1 bytes={len(MESSAGE)} probes={probes} served={served}")


def cmd_stuck_in_data(args):
    b = open_in_data(args)
    b.send(stuff(MESSAGE)[:100])
    print("READY", flush=True)
    sys.stdin.read()  # hold the connection until the test closes our stdin
    b.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("max-connections")
    a.add_argument("--max", type=int, required=True)
    sub.add_parser("drain")
    sub.add_parser("stuck-in-data")
    args = p.parse_args()
    {"max-connections": cmd_max_connections, "drain": cmd_drain, "stuck-in-data": cmd_stuck_in_data}[args.cmd](args)


if __name__ == "__main__":
    run_main(main)
