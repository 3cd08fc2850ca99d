#!/usr/bin/env python3
"""Writes the seed inputs of the `session` fuzz target (see fuzz_targets/session.rs for the format).

Run from fuzz/: python3 seeds/make_seeds.py. Seeds use only raw segments (op 6), answers (op 9),
zero-copy toggle (op 12), defer toggle (op 13), answer-now (op 14) and body filler (op 15),
so they stay valid if the token table changes.
"""
import os

def raw(b):
    out = b""
    while b:
        part, b = b[:255], b[255:]
        out += bytes([6, len(part)]) + part
    return out

def cfg(c0=0, c1=2, c2=10, c3=0):
    return bytes([c0, c1, c2, c3])

ENV = b"EHLO client.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
BODY = b"Subject: test\r\n\r\n..leading dot\r\n.x\r\nbody line\r\n"
NORMALIZE = 0x02
seeds = {
    "data": cfg() + raw(ENV + b"DATA\r\n") + raw(BODY + b".\r\n") + raw(b"QUIT\r\n"),
    "data-split": cfg() + raw(ENV + b"DATA\r\n" + BODY[:20]) + raw(BODY[20:] + b"\r") + raw(b"\n.") + raw(b"\r\nNOOP\r\n"),
    "bdat": cfg() + raw(ENV + b"BDAT 10\r\n0123456789BDAT 6 LAST\r\nab\r\ncdRSET\r\n"),
    "bdat-cr-split": cfg() + raw(ENV + b"BDAT 3\r\nab\rBDAT 3 LAST\r\n\ncd"),
    "normalize": cfg(c0=NORMALIZE) + raw(ENV + b"DATA\r\n") + raw(b"a\nb\r.\nc\r\n.\r\n"),
    "reject-bare": cfg() + raw(ENV + b"DATA\r\n") + raw(b"a\nb\r\n.\r\nNOOP\nNOOP\r\n"),
    "deferred-zero-copy": cfg() + bytes([12, 13]) + raw(ENV + b"DATA\r\n" + BODY + b".\r\nQUIT\r\n") + bytes([14, 9, 2, 14, 14, 14, 14, 14]),
    "size-limit": cfg(c1=1) + raw(ENV + b"DATA\r\n") + bytes([15, 3, 4]) + raw(b".\r\n") + raw(b"MAIL FROM:<a@b> SIZE=50\r\n"),
    "filler-80k": cfg(c1=2) + bytes([12]) + raw(ENV + b"DATA\r\n") + bytes([15, 1, 255]) * 4 + raw(b".\r\n"),
    "pipelined-refusals": cfg(c1=3 * 2) + bytes([9, 3, 9, 0, 9, 2]) + raw(ENV + b"RCPT TO:<e@f>\r\nRCPT TO:<g@h>\r\nDATA\r\n"),
    "timeouts": cfg() + raw(ENV + b"DATA\r\nabc") + bytes([11, 5, 11, 7]),
    "errors": cfg(c2=3) + raw(b"FOO\r\nBAR\r\nEHLO\r\nNOOP\r\n" + b"x" * 600),
    "smtputf8": cfg(c0=1) + raw("EHLO x\r\nMAIL FROM:<ü@b> SMTPUTF8\r\nRCPT TO:<ü@d>\r\nBDAT 0 LAST\r\n".encode()),
}
os.makedirs("seeds/session", exist_ok=True)
for name, data in seeds.items():
    with open(f"seeds/session/{name}", "wb") as f:
        f.write(data)
