#!/usr/bin/env python3
"""Hold many SMTP connections open at once, then close them all cleanly.

  hold_connections.py --port P --count 2000

1. raises RLIMIT_NOFILE (soft) so that one process can hold --count sockets;
2. opens --count connections (at most --concurrency connects in flight) and reads each one's
   220 greeting; every connection stays open;
3. once all are open, sends NOOP on every one of them and expects 250 (the server still serves
   every session while they are all held);
4. sends QUIT on every one, expects 221 and then EOF, and closes;
5. finally sends one message with smtplib: the server is still healthy.

Bounded: the whole run is cut off by --deadline seconds. Prints "held=N" on success.
"""

import argparse
import asyncio
import resource
import smtplib
import sys
import time

from smtpwire import check, fail, read_reply_async as read_reply, run_main


async def open_one(host, port, i, sem):
    async with sem:
        for attempt in range(5):
            try:
                reader, writer = await asyncio.open_connection(host, port)
                break
            except (ConnectionRefusedError, ConnectionResetError) as e:
                # The accept queue can overflow for a moment; retry a few times, then give up.
                if attempt == 4:
                    fail(f"connection {i}: {e!r}")
                await asyncio.sleep(0.2 * (attempt + 1))
        code, line = await read_reply(reader, f"greeting on connection {i}")
        check(code == 220, f"connection {i}: expected 220 greeting, got {line!r}")
        return reader, writer


async def noop(i, conn, sem):
    reader, writer = conn
    async with sem:
        writer.write(b"NOOP\r\n")
        await writer.drain()
        code, line = await read_reply(reader, f"NOOP on connection {i}")
        check(code == 250, f"connection {i}: NOOP: expected 250, got {line!r}")


async def quit_one(i, conn, sem):
    reader, writer = conn
    async with sem:
        writer.write(b"QUIT\r\n")
        await writer.drain()
        code, line = await read_reply(reader, f"QUIT on connection {i}")
        check(code == 221, f"connection {i}: QUIT: expected 221, got {line!r}")
        rest = await reader.read()
        check(rest == b"", f"connection {i}: data after 221: {rest!r}")
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionResetError, BrokenPipeError):
            pass


async def run(args):
    sem = asyncio.Semaphore(args.concurrency)
    t0 = time.monotonic()
    conns = await asyncio.gather(*(open_one(args.host, args.port, i, sem) for i in range(args.count)))
    t1 = time.monotonic()
    print(f"opened {len(conns)} connections in {t1 - t0:.2f}s", file=sys.stderr)
    await asyncio.gather(*(noop(i, c, sem) for i, c in enumerate(conns)))
    t2 = time.monotonic()
    print(f"NOOP on all {len(conns)} in {t2 - t1:.2f}s", file=sys.stderr)
    await asyncio.gather(*(quit_one(i, c, sem) for i, c in enumerate(conns)))
    print(f"QUIT on all in {time.monotonic() - t2:.2f}s", file=sys.stderr)
    return len(conns)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--deadline", type=float, default=120.0)
    args = p.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.count + 256
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    check(soft == resource.RLIM_INFINITY or soft >= need, f"RLIMIT_NOFILE hard limit {hard} is too low for {args.count} sockets")

    try:
        held = asyncio.run(asyncio.wait_for(run(args), args.deadline))
    except asyncio.TimeoutError:
        fail(f"not done within {args.deadline}s")
    check(held == args.count, f"held {held} of {args.count}")

    s = smtplib.SMTP(args.host, args.port, local_hostname="peer.example", timeout=20)
    refused = s.sendmail("a@example.org", ["b@example.org"], b"Subject: after the crowd\r\n\r\nstill here\r\n")
    check(not refused, f"final message refused: {refused}")
    s.quit()
    print(f"held={held}")


if __name__ == "__main__":
    run_main(main)
