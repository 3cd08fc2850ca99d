#!/usr/bin/env python3
"""Drive a server with Python's own smtplib (the client most users of python -m smtpd had).

Subcommands (all take --host/--port; every one exits non-zero with a message on failure):

  sendmail FILE...      one connection, one smtplib.sendmail() per file (raw bytes, CRLF),
                        with --from/--to/--mail-option; every recipient must be accepted
  send-message --capture DIR [--utf8]
                        builds email.message.EmailMessage objects and sends them with
                        send_message(); records the exact bytes and MAIL options smtplib
                        handed to sendmail() in DIR/NNN.eml and DIR/NNN.opts, so that the
                        Rust test can render what the server must print
  utf8-refused          server without SMTPUTF8: smtplib must refuse to send an
                        internationalised message (client side, SMTPNotSupportedError)
  size-limit --limit N  MAIL SIZE= over the limit -> 552 5.3.4; an undeclared body over the
                        limit -> 552 after the final dot; then a small message still succeeds
  many --count N        N messages one after the other on one connection
  protocol              EHLO keyword set (--expect-ext), enhanced status codes on replies,
                        100 recipients then 452, STARTTLS and AUTH -> 502, HELP, NOOP, RSET
"""

import argparse
import email.message
import email.policy
import os
import re
import smtplib
import sys

from smtpwire import check, fail, run_main

ENHANCED = re.compile(rb"^[245]\.\d{1,3}\.\d{1,3} ")


def connect(args):
    s = smtplib.SMTP(args.host, args.port, local_hostname="peer.example", timeout=args.timeout)
    if args.verbose:
        s.set_debuglevel(1)
    code, _ = s.ehlo()
    check(code == 250, f"EHLO: {code}")
    return s


def cmd_sendmail(args):
    s = connect(args)
    for path in args.files:
        with open(path, "rb") as f:
            msg = f.read()
        refused = s.sendmail(args.mail_from, args.to, msg, mail_options=args.mail_option)
        check(not refused, f"{path}: recipients refused: {refused}")
    s.quit()
    print(f"sent {len(args.files)}")


class CapturingSMTP(smtplib.SMTP):
    """Records what send_message() hands to sendmail(): the exact message bytes and options."""

    captured = []

    def sendmail(self, from_addr, to_addrs, msg, mail_options=(), rcpt_options=()):
        CapturingSMTP.captured.append((msg, list(mail_options)))
        return super().sendmail(from_addr, to_addrs, msg, mail_options, rcpt_options)


def build_messages(utf8):
    msgs = []
    if utf8:
        m = email.message.EmailMessage(policy=email.policy.SMTPUTF8)
        m["From"] = "Jörg Ünicode <jörg@bücher.example>"
        m["To"] = "Zoë <zoë@例え.テスト>"
        m["Subject"] = "Grüße — ümlauts and 日本語"
        m.set_content("Grüße aus Köln.\n.a line that starts with a dot\n\nΤέλος.\n")
        msgs.append(m)
        m = email.message.EmailMessage(policy=email.policy.SMTPUTF8)
        m["From"] = "plain@example.org"
        m["To"] = "пользователь@пример.рф"
        m["Subject"] = "second"
        m.set_content("Привет\n")
        msgs.append(m)
    else:
        m = email.message.EmailMessage()
        m["From"] = "Alice <alice@example.org>"
        m["To"] = "Bob <bob@example.net>, carol@example.net"
        m["Subject"] = "send_message test"
        m["Message-ID"] = "<send-message-1@peer.example>"
        m.set_content("Hello Bob,\n.\n..two dots\n\nbye\n")
        msgs.append(m)
        m = email.message.EmailMessage()
        m["From"] = "alice@example.org"
        m["To"] = "dave@example.net"
        m["Subject"] = "with attachment"
        m.set_content("see attached\n")
        m.add_attachment(bytes(range(256)), maintype="application", subtype="octet-stream", filename="all.bin")
        msgs.append(m)
    return msgs


def cmd_send_message(args):
    s = CapturingSMTP(args.host, args.port, local_hostname="peer.example", timeout=args.timeout)
    if args.verbose:
        s.set_debuglevel(1)
    s.ehlo()
    if args.utf8:
        check(s.has_extn("smtputf8"), f"server does not advertise SMTPUTF8: {s.esmtp_features}")
    for m in build_messages(args.utf8):
        refused = s.send_message(m)
        check(not refused, f"recipients refused: {refused}")
    s.quit()
    os.makedirs(args.capture, exist_ok=True)
    for i, (msg, opts) in enumerate(CapturingSMTP.captured):
        with open(os.path.join(args.capture, f"{i:03}.eml"), "wb") as f:
            f.write(msg)
        with open(os.path.join(args.capture, f"{i:03}.opts"), "w") as f:
            f.write("".join(o + "\n" for o in opts))
    print(f"sent {len(CapturingSMTP.captured)}")


def cmd_utf8_refused(args):
    s = connect(args)
    check(not s.has_extn("smtputf8"), "server advertises SMTPUTF8 although it should not")
    m = build_messages(True)[0]
    try:
        s.send_message(m)
    except smtplib.SMTPNotSupportedError:
        pass
    else:
        fail("send_message of an internationalised message succeeded without SMTPUTF8")
    s.quit()
    print("refused by smtplib as expected")


def cmd_size_limit(args):
    limit = args.limit
    s = connect(args)
    check(s.has_extn("size"), "SIZE not advertised")
    check(
        s.esmtp_features.get("size") == str(limit),
        f"SIZE parameter is {s.esmtp_features.get('size')!r}, expected {limit}",
    )
    big = b"Subject: too big\r\n\r\n" + (b"x" * 70 + b"\r\n") * (limit // 72 + 2)
    check(len(big) > limit, "test message not over the limit")
    # 1. Declared: smtplib adds SIZE=len(msg) to MAIL because the server advertises SIZE.
    try:
        s.sendmail("a@example.org", ["b@example.org"], big)
    except smtplib.SMTPSenderRefused as e:
        check(e.smtp_code == 552, f"MAIL SIZE= over the limit: expected 552, got {e.smtp_code} {e.smtp_error!r}")
        check(e.smtp_error.startswith(b"5.3.4"), f"expected enhanced code 5.3.4, got {e.smtp_error!r}")
    else:
        fail("MAIL with SIZE over the limit was accepted")
    s.rset()
    # 2. Undeclared: MAIL without SIZE=, then a body over the limit: 552 after the final dot.
    code, resp = s.mail("a@example.org")
    check(code == 250, f"MAIL: {code} {resp!r}")
    code, resp = s.rcpt("b@example.org")
    check(code == 250, f"RCPT: {code} {resp!r}")
    code, resp = s.data(big)
    check(code == 552, f"oversized undeclared body: expected 552 after the dot, got {code} {resp!r}")
    # 3. The session is still usable: a message under the limit is accepted.
    small = b"Subject: small\r\n\r\nfits\r\n"
    refused = s.sendmail("a@example.org", ["b@example.org"], small)
    check(not refused, f"small message refused: {refused}")
    s.quit()
    print("size limit enforced")


def cmd_many(args):
    s = connect(args)
    total = 0
    for i in range(args.count):
        msg = f"Subject: message {i}\r\nX-Seq: {i}\r\n\r\nbody of message {i}\r\n".encode()
        refused = s.sendmail("a@example.org", ["b@example.org", "c@example.org"], msg)
        check(not refused, f"message {i}: refused {refused}")
        total += len(msg)
    s.quit()
    print(f"messages={args.count} recipients={2 * args.count} bytes={total}")


def cmd_protocol(args):
    s = connect(args)
    got = {k.lower() + ((" " + v) if v else "") for k, v in s.esmtp_features.items()}
    want = {e.lower() for e in args.expect_ext}
    check(got == want, f"EHLO keywords: got {sorted(got)}, expected {sorted(want)}")

    def enhanced(what, code, resp, want_code):
        check(code == want_code, f"{what}: expected {want_code}, got {code} {resp!r}")
        if "enhancedstatuscodes" in want:
            check(ENHANCED.match(resp), f"{what}: no enhanced status code in {resp!r}")

    enhanced("NOOP", *s.noop(), 250)
    enhanced("MAIL", *s.mail("sender@example.org"), 250)
    for i in range(100):
        code, resp = s.rcpt(f"r{i}@example.org")
        enhanced(f"RCPT #{i + 1}", code, resp, 250)
    code, resp = s.rcpt("one-too-many@example.org")
    check(code == 452, f"RCPT #101: expected 452, got {code} {resp!r}")
    enhanced("RSET", *s.rset(), 250)
    for verb in ("STARTTLS", "AUTH PLAIN AGFAAGI="):
        code, resp = s.docmd(verb)
        check(code == 502, f"{verb.split()[0]}: expected 502, got {code} {resp!r}")
    code, resp = s.docmd("HELP")
    check(code in (211, 214), f"HELP: expected 214, got {code} {resp!r}")
    code, resp = s.docmd("FROBNICATE")
    check(code == 500, f"unknown command: expected 500, got {code} {resp!r}")
    code, resp = s.docmd("RCPT TO:<x@example.org>")
    check(code == 503, f"RCPT before MAIL: expected 503, got {code} {resp!r}")
    s.quit()
    print("protocol ok")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("sendmail")
    a.add_argument("--from", dest="mail_from", default="sender@example.org")
    a.add_argument("--to", action="append", default=None)
    a.add_argument("--mail-option", action="append", default=[])
    a.add_argument("files", nargs="+")
    a = sub.add_parser("send-message")
    a.add_argument("--capture", required=True)
    a.add_argument("--utf8", action="store_true")
    sub.add_parser("utf8-refused")
    a = sub.add_parser("size-limit")
    a.add_argument("--limit", type=int, required=True)
    a = sub.add_parser("many")
    a.add_argument("--count", type=int, required=True)
    a = sub.add_parser("protocol")
    a.add_argument("--expect-ext", action="append", default=[])
    args = p.parse_args()
    if args.cmd == "sendmail" and not args.to:
        args.to = ["rcpt@example.org"]
    {
        "sendmail": cmd_sendmail,
        "send-message": cmd_send_message,
        "utf8-refused": cmd_utf8_refused,
        "size-limit": cmd_size_limit,
        "many": cmd_many,
        "protocol": cmd_protocol,
    }[args.cmd](args)


if __name__ == "__main__":
    def _main():
        try:
            main()
        except (smtplib.SMTPException, OSError) as e:
            fail(f"{type(e).__name__}: {e}")

    run_main(_main)
