#!/usr/bin/env python3
"""Raw-socket SMTP scenarios that smtplib cannot produce (it neither pipelines nor speaks BDAT).

Subcommands (all take --host/--port; non-zero exit with a message on any unexpected reply):

  pipeline --count N   RFC 2920 pipelining: each batch is [end of the previous message's data +]
                       MAIL, RCPT, RCPT, DATA in a single write; replies are checked in order.
                       Prints the totals the sink must report.
  blast --count N      everything in ONE write, from EHLO through N whole transactions
                       (including their message data) to QUIT, then read every reply. Not what
                       RFC 2920 allows a client to do (it must wait for 354), but a robust
                       server handles it, and smtp-sink does.
  bdat                 CHUNKING (RFC 3030): chunked messages, a CRLF split across chunks, a line
                       that starts with a dot (never unstuffed in BDAT), BDAT 0 LAST, a whole
                       transaction pipelined with BDAT, DATA after BDAT, BDAT without MAIL
                       -> 503. Writes the contents the server must print to --expect-dir.
  bare-lf              a bare LF inside DATA -> 554 after the final dot, and the session goes
                       on: the next message is accepted.
"""

import argparse
import os

from smtpwire import Conn, check, run_main, stuff


def message(i, size):
    """A deterministic message of about `size` bytes whose body has a line starting with '.'."""
    head = f"Subject: pipelined {i}\r\nX-Seq: {i}\r\n\r\n.leading dot line\r\n".encode()
    filler = (f"line {i} " + "z" * 60 + "\r\n").encode()
    body = head
    while len(body) < size:
        body += filler
    return body


def cmd_pipeline(args):
    c = Conn(args.host, args.port)
    c.expect(220, "greeting")
    ext = c.ehlo()
    check("PIPELINING" in [e.upper() for e in ext], f"PIPELINING not advertised: {ext}")
    total = 0
    pending = None  # data of the previous message, not yet sent
    for i in range(args.count):
        msg = message(i, 200 + 37 * i)
        batch = b""
        if pending is not None:
            batch += stuff(pending)
        batch += f"MAIL FROM:<s{i}@example.org>\r\nRCPT TO:<r{i}a@example.org>\r\n".encode()
        batch += f"RCPT TO:<r{i}b@example.org>\r\nDATA\r\n".encode()
        c.send(batch)
        if pending is not None:
            c.expect(250, f"end of data of message {i - 1}")
        c.expect(250, f"MAIL {i}")
        c.expect(250, f"RCPT {i}a")
        c.expect(250, f"RCPT {i}b")
        c.expect(354, f"DATA {i}")
        pending = msg
        total += len(msg)
    c.send(stuff(pending) + b"QUIT\r\n")
    c.expect(250, f"end of data of message {args.count - 1}")
    c.expect(221, "QUIT")
    c.expect_eof(what="after QUIT")
    print(f"messages={args.count} recipients={2 * args.count} bytes={total}")


def cmd_blast(args):
    c = Conn(args.host, args.port)
    out = [b"EHLO blaster.example\r\n"]
    total = 0
    for i in range(args.count):
        msg = message(i, 100 + 53 * i)
        total += len(msg)
        out.append(f"MAIL FROM:<s{i}@example.org>\r\nRCPT TO:<r{i}@example.org>\r\nDATA\r\n".encode())
        out.append(stuff(msg))
    out.append(b"QUIT\r\n")
    c.send(b"".join(out))
    c.expect(220, "greeting")
    c.expect(250, "EHLO")
    for i in range(args.count):
        c.expect(250, f"MAIL {i}")
        c.expect(250, f"RCPT {i}")
        c.expect(354, f"DATA {i}")
        c.expect(250, f"end of data {i}")
    c.expect(221, "QUIT")
    c.expect_eof(what="after QUIT")
    print(f"messages={args.count} recipients={args.count} bytes={total}")


def cmd_bdat(args):
    os.makedirs(args.expect_dir, exist_ok=True)
    expected = []
    c = Conn(args.host, args.port)
    c.expect(220, "greeting")
    ext = [e.upper() for e in c.ehlo()]
    check("CHUNKING" in ext, f"CHUNKING not advertised: {ext}")

    # 1. Three chunks, one command per round trip; the CRLF after the Subject line and the CRLF
    #    after the ".dot" line are split across chunks. BDAT content is never dot-unstuffed.
    chunks = [b"Subject: bdat one\r", b"\n\r\n.dot stays\r", b"\nlast line\r\n"]
    c.send("MAIL FROM:<a@example.org>\r\n")
    c.expect(250, "MAIL 1")
    c.send("RCPT TO:<b@example.org>\r\n")
    c.expect(250, "RCPT 1")
    for n, ch in enumerate(chunks):
        last = " LAST" if n == len(chunks) - 1 else ""
        c.send(f"BDAT {len(ch)}{last}\r\n".encode() + ch)
        c.expect(250, f"BDAT chunk {n + 1} of message 1")
    expected.append(b"".join(chunks))

    # 2. A whole transaction in one write: MAIL, RCPT, two BDAT chunks, the second LAST.
    #    The body has 8-bit bytes and a chunk that looks like SMTP commands.
    c1 = b"Subject: bdat two\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    c2 = "Grüße\r\nQUIT\r\n.\r\nRSET\r\n".encode()
    c.send(
        b"MAIL FROM:<a@example.org> BODY=8BITMIME\r\nRCPT TO:<b@example.org>\r\n"
        + f"BDAT {len(c1)}\r\n".encode() + c1
        + f"BDAT {len(c2)} LAST\r\n".encode() + c2
    )
    c.expect(250, "MAIL 2")
    c.expect(250, "RCPT 2")
    c.expect(250, "BDAT 2a")
    c.expect(250, "BDAT 2b LAST")
    expected.append(c1 + c2)

    # 3. Chunks then BDAT 0 LAST.
    c3 = b"Subject: bdat three\r\n\r\nbody\r\n"
    c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n" + f"BDAT {len(c3)}\r\n".encode() + c3)
    c.expect(250, "MAIL 3")
    c.expect(250, "RCPT 3")
    c.expect(250, "BDAT 3")
    c.send("BDAT 0 LAST\r\n")
    c.expect(250, "BDAT 0 LAST")
    expected.append(c3)

    # 4. DATA still works after BDAT transactions.
    c4 = b"Subject: data after bdat\r\n\r\n.leading dot\r\n"
    c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
    c.expect(250, "MAIL 4")
    c.expect(250, "RCPT 4")
    c.expect(354, "DATA 4")
    c.send(stuff(c4))
    c.expect(250, "end of data 4")
    expected.append(c4)

    # 5. BDAT without a transaction is a sequence error (its chunk must still be consumed).
    c.send(b"BDAT 5 LAST\r\nhello")
    r = c.reply()
    check(r is not None and r.code == 503, f"BDAT without MAIL: expected 503, got {r!r}")
    c.send("NOOP\r\n")
    c.expect(250, "NOOP after the refused BDAT (chunk must have been skipped)")

    c.send("QUIT\r\n")
    c.expect(221, "QUIT")
    for i, e in enumerate(expected):
        with open(os.path.join(args.expect_dir, f"{i:03}.eml"), "wb") as f:
            f.write(e)
    print(f"messages={len(expected)} bytes={sum(map(len, expected))}")


def cmd_bare_lf(args):
    c = Conn(args.host, args.port)
    c.expect(220, "greeting")
    c.ehlo()
    c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
    c.expect(250, "MAIL")
    c.expect(250, "RCPT")
    c.expect(354, "DATA")
    c.send(b"Subject: bare lf\r\n\r\nfirst line\nsecond line\r\n.\r\n")
    r = c.reply()
    check(r is not None and r.code == 554, f"bare LF in DATA: expected 554 after the dot, got {r!r}")
    good = b"Subject: fine\r\n\r\nok\r\n"
    c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
    c.expect(250, "MAIL after 554")
    c.expect(250, "RCPT after 554")
    c.expect(354, "DATA after 554")
    c.send(stuff(good) + b"QUIT\r\n")
    c.expect(250, "message after the rejected one")
    c.expect(221, "QUIT")
    print(f"messages=1 bytes={len(good)}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pipeline")
    a.add_argument("--count", type=int, default=20)
    a = sub.add_parser("blast")
    a.add_argument("--count", type=int, default=20)
    a = sub.add_parser("bdat")
    a.add_argument("--expect-dir", required=True)
    sub.add_parser("bare-lf")
    args = p.parse_args()
    {"pipeline": cmd_pipeline, "blast": cmd_blast, "bdat": cmd_bdat, "bare-lf": cmd_bare_lf}[args.cmd](args)


if __name__ == "__main__":
    run_main(main)
