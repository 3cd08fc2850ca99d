#!/usr/bin/env python3
"""Drive a server whose handler extends the command set, with Python's smtplib (`docmd`).

Prints one JSON object on stdout with what the server answered at each step; the Rust test
(tests/channel_hooks.rs) checks it. Exits non-zero with a message on stderr if smtplib fails.

Subcommands (all take --host/--port):

  xstats       examples/xstats.rs: EHLO features, XSTATS before and after a message with two
               recipients, an unknown XFOO, then the error budget (the server allows 3 errors):
               many answered XSTATS, a 501 for XSTATS with an argument, NOOP, a last XFOO, and
               what follows it
  every-line   a handler that sees every line: VRFY answered by it, a message sent through the
               core as usual, XLINES (its count of lines seen), QUIT
"""

import argparse
import json
import smtplib

from smtpwire import check, fail, run_main

MESSAGE = b"Subject: hooks\r\n\r\nhello\r\n"


def connect(args):
    s = smtplib.SMTP(args.host, args.port, local_hostname="peer.example", timeout=args.timeout)
    code, _ = s.ehlo()
    check(code == 250, f"EHLO: {code}")
    return s


def pair(r):
    code, text = r
    return [code, text.decode("ascii", "replace")]


def cmd_xstats(args):
    s = connect(args)
    out = {"features": s.esmtp_features, "has_xstats": s.has_extn("xstats")}
    out["xstats_before"] = pair(s.docmd("XSTATS"))
    refused = s.sendmail("a@example.org", ["b@example.org", "c@example.org"], MESSAGE)
    check(not refused, f"recipients refused: {refused}")
    out["xstats_after"] = pair(s.docmd("XSTATS"))
    out["xfoo"] = pair(s.docmd("XFOO", "bar"))
    out["answered"] = [s.docmd("xstats")[0] for _ in range(25)]
    out["xstats_arg"] = pair(s.docmd("XSTATS", "now"))
    out["noop"] = pair(s.noop())
    out["xfoo_last"] = pair(s.docmd("XFOO"))
    # The third error spent the budget: its 421 follows, then the server closes.
    out["after"] = pair(s.getreply())
    s.close()
    print(json.dumps(out))


def cmd_every_line(args):
    s = connect(args)
    out = {"vrfy": pair(s.docmd("VRFY", "bob"))}
    refused = s.sendmail("a@example.org", ["b@example.org"], MESSAGE)
    check(not refused, f"recipients refused: {refused}")
    out["xlines"] = pair(s.docmd("XLINES"))
    out["quit"] = pair(s.quit())
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--timeout", type=float, default=20.0)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("xstats")
    sub.add_parser("every-line")
    args = p.parse_args()
    {"xstats": cmd_xstats, "every-line": cmd_every_line}[args.cmd](args)


if __name__ == "__main__":
    def _main():
        try:
            main()
        except (smtplib.SMTPException, OSError) as e:
            fail(f"{type(e).__name__}: {e}")

    run_main(_main)
