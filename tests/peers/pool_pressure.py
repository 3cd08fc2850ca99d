#!/usr/bin/env python3
"""Many connections sending their message bodies at the same moment (DATA pool pressure).

  pool_pressure.py --port P --count 2000 --size 8192 [--concurrency 500] [--deadline 150]

1. raises RLIMIT_NOFILE (soft) so that one process can hold --count sockets;
2. opens --count connections (at most --concurrency connects in flight), and on each reads the
   220, sends EHLO, then MAIL, RCPT and DATA pipelined, and reads 250, 250, 354;
3. once every connection is waiting in DATA, all of them write their body (--size octets of
   CRLF lines that name the connection and the line, see body()) and the final dot at once;
4. every connection must get 250 for its message, then QUIT / 221.

With --stall-after K each connection writes only the first K octets of its body and then
waits for the server to end the connection; "stalled" is printed once all have written, and
at the end "stalled=N timed_out=T closed=C": T connections got a 421 (the idle timeout), C
were closed by the server (every one must be, by a timeout or a drain, within --deadline).

The bodies are what the test checks in the server's output: connection i's body is body(i)
and nothing else. Bounded by --deadline seconds. Prints "delivered=N octets=M" on success.
"""

import argparse
import asyncio
import resource
import sys
import time

from smtpwire import check, fail, read_reply_async as read_reply, run_main


def body(i, size):
    """The body of connection i: size // 78 lines (at least one), each "conn <i> line <j> "
    padded with x to 76 octets, then CRLF."""
    lines = []
    for j in range(max(1, size // 78)):
        line = f"conn {i} line {j} ".encode()
        lines.append(line + b"x" * (76 - len(line)) + b"\r\n")
    return b"".join(lines)


async def connect(host, port, i, sem):
    async with sem:
        for attempt in range(5):
            try:
                return await asyncio.open_connection(host, port)
            except OSError:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))


async def stalled(reader, i):
    """After a partial body: read until the server closes; True if a 421 came first."""
    got_421 = False
    try:
        while True:
            line = await reader.readline()
            if not line:
                return got_421
            got_421 |= line.startswith(b"421")
    except (ConnectionResetError, BrokenPipeError):
        return got_421


async def one(host, port, i, size, sem, ready, go, stall_after=None):
    reader, writer = await connect(host, port, i, sem)
    code, line = await read_reply(reader, f"conn {i} greeting")
    check(code == 220, f"conn {i}: greeting {line!r}")
    writer.write(b"EHLO pressure.test\r\n")
    code, line = await read_reply(reader, f"conn {i} EHLO")
    check(code == 250, f"conn {i}: EHLO {line!r}")
    writer.write(b"MAIL FROM:<p@pressure.test>\r\nRCPT TO:<r@pressure.test>\r\nDATA\r\n")
    for want in (250, 250, 354):
        code, line = await read_reply(reader, f"conn {i} envelope")
        check(code == want, f"conn {i}: expected {want}, got {line!r}")
    ready()
    await go.wait()
    data = b"X-Conn: %d\r\n\r\n" % i + body(i, size)
    if stall_after is not None:
        writer.write(data[:stall_after])
        await writer.drain()
        return ("stalled", await stalled(reader, i))
    writer.write(data + b".\r\n")
    code, line = await read_reply(reader, f"conn {i} end of data")
    check(code == 250, f"conn {i}: end of data {line!r}")
    writer.write(b"QUIT\r\n")
    code, line = await read_reply(reader, f"conn {i} QUIT")
    check(code == 221, f"conn {i}: QUIT {line!r}")
    writer.close()
    return len(data)


async def run(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.count + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    sem = asyncio.Semaphore(args.concurrency)
    go = asyncio.Event()
    waiting = [0]

    def ready():
        waiting[0] += 1
        if waiting[0] == args.count:
            go.set()

    tasks = [
        asyncio.create_task(
            one("127.0.0.1", args.port, i, args.size, sem, ready, go, args.stall_after)
        )
        for i in range(args.count)
    ]
    if args.stall_after is not None:
        await go.wait()
        # Every connection is in DATA; give them a moment to write their partial bodies.
        await asyncio.sleep(0.5)
        print("stalled", flush=True)
        results = [await t for t in tasks]
        timed_out = sum(1 for _, t in results if t)
        print(f"stalled={args.count} timed_out={timed_out} closed={len(results)}", flush=True)
        return
    octets = 0
    for t in asyncio.as_completed(tasks):
        octets += await t
    print(f"delivered={args.count} octets={octets}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--concurrency", type=int, default=500)
    p.add_argument("--deadline", type=float, default=150)
    p.add_argument("--stall-after", type=int, default=None)
    args = p.parse_args()
    started = time.time()
    try:
        asyncio.run(asyncio.wait_for(run(args), args.deadline))
    except asyncio.TimeoutError:
        fail(f"not done within {args.deadline} s ({time.time() - started:.1f} s)")


if __name__ == "__main__":
    run_main(main)
