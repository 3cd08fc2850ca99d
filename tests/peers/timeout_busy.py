#!/usr/bin/env python3
"""Idle timeout on one session while another session on the same shard keeps working.

  timeout_busy.py --port P --timeout 2 --messages 200

* the idle client connects, says EHLO and then stays silent: it must receive
  "421 4.4.2 ... timeout exceeded" no sooner than --timeout seconds (minus a little slack) and not
  much later, and then EOF;
* a second idle client stops in the middle of a transaction (after MAIL and RCPT): same 421;
* meanwhile the busy client sends --messages messages of different sizes one after the other on
  one connection, paced so that the stream spans the moment the idle clients time out (never
  silent for long, so it must never time out); every message must get 250.

Prints "messages=N recipients=N bytes=N" for the sink's summary to be compared against.
"""

import argparse
import smtplib
import threading
import time

from smtpwire import Conn, check, fail, run_main


def idle_client(args, mid_transaction, result):
    try:
        c = Conn(args.host, args.port, timeout=args.timeout + 10)
        c.expect(220, "greeting")
        c.ehlo("idle.example")
        if mid_transaction:
            c.send("MAIL FROM:<idle@example.org>\r\nRCPT TO:<x@example.org>\r\n")
            c.expect(250, "MAIL")
            c.expect(250, "RCPT")
        t0 = time.monotonic()
        r = c.reply()
        waited = time.monotonic() - t0
        check(r is not None, f"EOF without a 421 after {waited:.2f}s")
        check(r.code == 421, f"expected 421 after idling, got {r!r}")
        check(r.enhanced() == "4.4.2", f"expected enhanced status 4.4.2, got {r!r}")
        check(b"timeout exceeded" in r.text.lower(), f"expected 'timeout exceeded' in {r!r}")
        check(waited >= args.timeout - 0.3, f"421 after {waited:.2f}s, before the {args.timeout}s timeout")
        check(waited <= args.timeout + 3.0, f"421 only after {waited:.2f}s (timeout {args.timeout}s)")
        c.expect_eof(timeout=3.0, what="after the 421 timeout reply")
        result["waited"] = waited
        result["ok"] = True
    except Exception as e:  # reported by the main thread
        result["error"] = f"{type(e).__name__}: {e}"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--timeout", type=float, required=True)
    p.add_argument("--messages", type=int, default=200)
    args = p.parse_args()

    results = [{}, {}]
    threads = [
        threading.Thread(target=idle_client, args=(args, False, results[0])),
        threading.Thread(target=idle_client, args=(args, True, results[1])),
    ]
    for t in threads:
        t.start()

    # Busy client: the whole stream takes about 2 x timeout, so it spans the idle clients' 421.
    pace = 2.0 * args.timeout / args.messages
    s = smtplib.SMTP(args.host, args.port, local_hostname="busy.example", timeout=20)
    s.ehlo()
    total = 0
    t0 = time.monotonic()
    for i in range(args.messages):
        size = 50 + (i * 7919) % 6000
        body = (f"Subject: busy {i}\r\n\r\n").encode()
        line = (f"{i:06} " + "b" * 70 + "\r\n").encode()
        while len(body) < size:
            body += line
        try:
            refused = s.sendmail("busy@example.org", ["r@example.org"], body)
        except smtplib.SMTPException as e:
            fail(f"busy client: message {i} after {time.monotonic() - t0:.2f}s: {type(e).__name__}: {e}")
        check(not refused, f"busy client: message {i}: refused {refused}")
        total += len(body)
        time.sleep(pace)
    elapsed = time.monotonic() - t0
    s.quit()

    for t in threads:
        t.join(timeout=args.timeout + 20)
        check(not t.is_alive(), "an idle client thread did not finish")
    for name, r in zip(("idle after EHLO", "idle inside a transaction"), results):
        check(r.get("ok"), f"{name}: {r.get('error')}")
    print(
        f"busy stream took {elapsed:.2f}s; idle clients got 421 after "
        f"{results[0]['waited']:.2f}s and {results[1]['waited']:.2f}s",
        file=__import__("sys").stderr,
    )
    print(f"messages={args.messages} recipients={args.messages} bytes={total}")


if __name__ == "__main__":
    run_main(main)
