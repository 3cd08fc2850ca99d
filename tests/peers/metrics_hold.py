#!/usr/bin/env python3
"""Holds a transaction open for the drain test.

Usage: metrics_hold.py PORT

Connects, sends EHLO, MAIL, RCPT and DATA, prints "holding" and waits for a line on standard
input; then ends the message, prints "done CODE" with the reply to the end of data, and quits.
"""
import smtplib
import sys


def main():
    s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=60)
    s.ehlo("drain-test")
    code, _ = s.mail("hold@example.org")
    assert code == 250, code
    code, _ = s.rcpt("sink@example.net")
    assert code == 250, code
    s.putcmd("data")
    code, _ = s.getreply()
    assert code == 354, code
    s.send(b"Subject: held\r\n\r\nstill here\r\n")
    print("holding", flush=True)
    sys.stdin.readline()
    s.send(b".\r\n")
    code, _ = s.getreply()
    print(f"done {code}", flush=True)
    try:
        s.quit()
    except smtplib.SMTPServerDisconnected:
        pass


if __name__ == "__main__":
    main()
