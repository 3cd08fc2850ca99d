"""aiosmtpd as a recording peer with STARTTLS and AUTH (PLAIN, LOGIN).

usage: aiosmtpd_server.py PORT CERT KEY [TLS_PORT]
With TLS_PORT, a second listener speaks implicit TLS from the first byte (SMTPS, port 465 style).
Accepts user "user" with password "secret" (AUTH only after STARTTLS, aiosmtpd's default).
For each message prints one line: MESSAGE <mail_from> <rcpt,...> <sha256 of content> <size>
Prints "ready" once listening; stops on stdin EOF or after 120 s.
"""
import hashlib
import ssl
import sys
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
tls_port = int(sys.argv[4]) if len(sys.argv) > 4 else None


class Recorder:
    async def handle_DATA(self, server, session, envelope):
        content = envelope.original_content
        print(
            "MESSAGE %s %s %s %d %s"
            % (
                envelope.mail_from,
                ",".join(envelope.rcpt_tos),
                hashlib.sha256(content).hexdigest(),
                len(content),
                "tls" if session.ssl or server.transport.get_extra_info("ssl_object") else "plain",
            ),
            flush=True,
        )
        return "250 2.0.0 recorded"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login == b"user" and auth_data.password == b"secret"
    # handled=False: let aiosmtpd send its own 535 on failure.
    return AuthResult(success=ok, handled=False)


ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
controller = Controller(
    Recorder(),
    hostname="127.0.0.1",
    port=port,
    tls_context=ctx,
    authenticator=authenticator,
    auth_required=False,
    decode_data=False,
)
controller.start()
implicit = None
if tls_port:
    implicit = Controller(
        Recorder(), hostname="127.0.0.1", port=tls_port, ssl_context=ctx, decode_data=False
    )
    implicit.start()
print("ready", flush=True)
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
done.wait(120)
controller.stop()
if implicit:
    implicit.stop()
