#!/usr/bin/env python3
"""A known workload for the metrics test, sent with the standard library's smtplib.

Usage: metrics_workload.py PORT --messages N --connections C --oversize K --declared D --size-limit L

* N messages (one recipient each) spread over C connections, accepted by a sink;
* K messages larger than the server's SIZE limit L sent *without* a SIZE= declaration, so the
  server refuses them at the end of data (552);
* D messages larger than L sent with smtplib's usual SIZE= declaration, refused at MAIL (552).

Every command smtplib writes is counted by verb. Prints one JSON object with those counts, the
connections opened and the content octets of the accepted messages.
"""
import argparse
import collections
import json
import smtplib
import sys

COMMANDS = collections.Counter()


class CountingSMTP(smtplib.SMTP):
    def putcmd(self, cmd, args=""):
        COMMANDS[cmd.split()[0].upper()] += 1
        super().putcmd(cmd, args)


def message(i, size):
    """About `size` octets: headers, then 78-octet lines; ends with CRLF, no line starts with a dot."""
    head = f"From: load@example.org\r\nTo: sink@example.net\r\nSubject: message {i}\r\n\r\n".encode()
    line = b"x" * 76 + b"\r\n"
    return head + line * max(0, (size - len(head)) // len(line))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--connections", type=int, default=5)
    ap.add_argument("--oversize", type=int, default=20)
    ap.add_argument("--declared", type=int, default=5)
    ap.add_argument("--size-limit", type=int, required=True)
    a = ap.parse_args()

    accepted_bytes = 0
    connections = 0
    per_conn = -(-a.messages // a.connections)
    sent = 0
    while sent < a.messages:
        s = CountingSMTP("127.0.0.1", a.port, timeout=30)
        connections += 1
        s.ehlo("metrics-test")
        for _ in range(min(per_conn, a.messages - sent)):
            m = message(sent, 200 + (sent * 37) % 3000)
            refused = s.sendmail("load@example.org", ["sink@example.net"], m)
            assert not refused, refused
            accepted_bytes += len(m)
            sent += 1
        s.quit()

    big = message(0, a.size_limit + 500)
    s = CountingSMTP("127.0.0.1", a.port, timeout=30)
    connections += 1
    s.ehlo("metrics-test")
    # Without the SIZE declaration smtplib would add, the refusal comes at the end of data.
    s.esmtp_features.pop("size", None)
    for _ in range(a.oversize):
        try:
            s.sendmail("load@example.org", ["sink@example.net"], big)
        except smtplib.SMTPDataError as e:
            assert e.smtp_code == 552, e
        else:
            sys.exit("an oversize message was accepted")
    s.quit()

    s = CountingSMTP("127.0.0.1", a.port, timeout=30)
    connections += 1
    s.ehlo("metrics-test")
    for _ in range(a.declared):
        try:
            s.sendmail("load@example.org", ["sink@example.net"], big)
        except smtplib.SMTPSenderRefused as e:
            assert e.smtp_code == 552, e
        else:
            sys.exit("a message declared too big was accepted")
    s.quit()

    print(json.dumps({
        "commands": dict(COMMANDS),
        "connections": connections,
        "accepted_bytes": accepted_bytes,
    }))


if __name__ == "__main__":
    main()
