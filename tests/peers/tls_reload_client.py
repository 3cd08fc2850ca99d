"""Two STARTTLS sessions around a certificate reload (tests/reload.rs).

usage: tls_reload_client.py PORT DIR

Opens session A, STARTTLS, prints "A CN=<subject CN>", then waits for a line on stdin (the
test reloads meanwhile), opens session B and prints "B CN=<cn>", then sends a message on A
(still open since before the reload) and prints "A sent", B's likewise ("B sent"). DIR is a
scratch directory for the peer certificates. Bounded: every socket has a 30 s timeout.
"""
import os
import smtplib
import ssl
import sys

port, scratch = int(sys.argv[1]), sys.argv[2]


def session(name):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = smtplib.SMTP("127.0.0.1", port, timeout=30)
    s.ehlo("reload.example")
    s.starttls(context=ctx)
    s.ehlo("reload.example")
    der = s.sock.getpeercert(binary_form=True)
    path = os.path.join(scratch, name + ".pem")
    with open(path, "w") as f:
        f.write(ssl.DER_cert_to_PEM_cert(der))
    decoded = ssl._ssl._test_decode_cert(path)
    cn = [v for rdn in decoded["subject"] for (k, v) in rdn if k == "commonName"][0]
    print("%s CN=%s" % (name, cn), flush=True)
    return s


a = session("A")
sys.stdin.readline()
b = session("B")
msg = "Subject: reload\r\n\r\nbody\r\n"
a.sendmail("a@example.com", ["b@example.com"], msg)
print("A sent", flush=True)
b.sendmail("a@example.com", ["b@example.com"], msg)
print("B sent", flush=True)
a.quit()
b.quit()
