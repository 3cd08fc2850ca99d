"""aiosmtpd as a recording peer that prints what it received, for `ringrelay send` tests.

usage: aiosmtpd_print.py PORT
Prints "ready" once listening; then for each message one line
  MESSAGE {"from": ..., "to": [...], "content": ...}
(JSON; content is the message as received, decoded as UTF-8). Stops on stdin EOF or after 60 s.
"""
import json
import sys
import threading
import time

from aiosmtpd.controller import Controller


class Printer:
    async def handle_DATA(self, server, session, envelope):
        record = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "content": envelope.original_content.decode("utf-8", "replace"),
        }
        print("MESSAGE " + json.dumps(record), flush=True)
        return "250 2.0.0 printed"


controller = Controller(Printer(), hostname="127.0.0.1", port=int(sys.argv[1]))
controller.start()
print("ready", flush=True)
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
done.wait(60)
controller.stop()
