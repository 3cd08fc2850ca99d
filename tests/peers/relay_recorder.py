"""A recording upstream for the relay tests: aiosmtpd storing every message it accepts.

usage: relay_recorder.py PORT DIR [--smtputf8] [--lifetime SECS]

For each accepted message (numbered from 1, in order of acceptance) it writes DIR/N.eml with
the content exactly as received (after dot-unstuffing, CRLF line ends, as aiosmtpd's
`original_content`) and prints one line, flushed before the 250 goes out:

  MESSAGE N <mail_from> <rcpt,rcpt...> <sha256 of content> <size> <mail options> <peer ip:port>

(`<mail options>` is the MAIL parameters joined with commas, `-` when none; the peer's
address tells the upstream connections apart.)
Prints "ready" once listening; on stdin EOF (or after --lifetime seconds, default 600) prints
"total=N" and exits.
"""
import argparse
import hashlib
import os
import sys
import threading

from aiosmtpd.controller import Controller

ap = argparse.ArgumentParser()
ap.add_argument("port", type=int)
ap.add_argument("dir")
ap.add_argument("--smtputf8", action="store_true")
ap.add_argument("--lifetime", type=float, default=600)
args = ap.parse_args()


class Recorder:
    def __init__(self):
        self.n = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        content = envelope.original_content
        with self.lock:
            self.n += 1
            n = self.n
        with open(os.path.join(args.dir, "%d.eml" % n), "wb") as f:
            f.write(content)
        print(
            "MESSAGE %d <%s> %s %s %d %s %s"
            % (
                n,
                envelope.mail_from,
                ",".join("<%s>" % r for r in envelope.rcpt_tos),
                hashlib.sha256(content).hexdigest(),
                len(content),
                ",".join(envelope.mail_options) or "-",
                "%s:%d" % (session.peer[0], session.peer[1]),
            ),
            flush=True,
        )
        return "250 2.0.0 recorded as %d" % n


recorder = Recorder()
controller = Controller(
    recorder,
    hostname="127.0.0.1",
    port=args.port,
    decode_data=False,
    enable_SMTPUTF8=args.smtputf8,
    # Tests send 100+ Received: fields and a few MB at most.
    data_size_limit=64 * 1024 * 1024,
)
controller.start()
print("ready", flush=True)
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
done.wait(args.lifetime)
controller.stop()
print("total=%d" % recorder.n, flush=True)
