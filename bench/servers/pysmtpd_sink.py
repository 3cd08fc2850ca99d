"""Python 3.11's standard-library smtpd as a sink, for bench/run.py.

usage: pysmtpd_sink.py PORT
smtpd.SMTPServer's own process_message raises NotImplementedError, so this subclass accepts
and discards every message (the seed's "SMTPServer with a do-nothing handler"). Single thread,
asyncore (select(): at most ~1000 connections); the listen backlog is raised from 5 to 1024. Runs until killed.
"""
import asyncore
import sys
import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)
import smtpd  # noqa: E402  (deprecated in 3.11, removed in 3.12)


class Sink(smtpd.SMTPServer):
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        return None


server = Sink(("127.0.0.1", int(sys.argv[1])), None, decode_data=False)
# SMTPServer listens with a backlog of 5, which drops SYNs as soon as 20 clients connect at
# once (1 s retransmits, then lost greetings); give it the same backlog as the others.
server.listen(1024)
print("ready", flush=True)
asyncore.loop(timeout=1)
