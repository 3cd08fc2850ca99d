"""Small raw-socket SMTP helpers shared by the peer scripts (standard library only).

The peers in this directory are independent SMTP clients used by the Rust integration tests in
tests/*.rs. They never trust the server: every reply is parsed and checked here, and any
surprise ends the script with a non-zero exit status and a message on stderr.
"""

import re
import socket
import sys
import time

ENHANCED = re.compile(rb"^[245]\.\d{1,3}\.\d{1,3}(?: |$)")


class Failure(Exception):
    pass


def fail(msg):
    raise Failure(msg)


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def run_main(main):
    """Run main(); turn a Failure or any exception into a readable message and exit 1."""
    try:
        main()
    except Failure as e:
        print(f"PEER FAILURE: {e}", file=sys.stderr)
        sys.exit(1)


class Reply:
    def __init__(self, code, lines):
        self.code = code  # int
        self.lines = lines  # list of bytes, text after "NNN-" / "NNN "

    @property
    def text(self):
        return b"\n".join(self.lines)

    def enhanced(self):
        """The enhanced status code of the first line, or None."""
        m = ENHANCED.match(self.lines[0]) if self.lines else None
        return m.group(0).strip().decode() if m else None

    def __repr__(self):
        return f"Reply({self.code}, {self.lines!r})"


class Conn:
    """A raw SMTP connection with a reply parser that tolerates arbitrary segmentation."""

    def __init__(self, host, port, timeout=10.0, family=None):
        if family is None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.buf = b""
        self.eof = False

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def read_line(self):
        """One CRLF-terminated line without its CRLF, or None at EOF."""
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2 :]
                return line
            if not self._fill():
                if self.buf:
                    fail(f"connection closed in the middle of a line: {self.buf!r}")
                return None

    def reply(self):
        """Read one (possibly multi-line) reply; None at a clean EOF before it starts."""
        lines = []
        code = None
        while True:
            line = self.read_line()
            if line is None:
                if lines:
                    fail(f"EOF inside a multi-line reply: {lines!r}")
                return None
            check(
                len(line) >= 3 and line[:3].isdigit() and (len(line) == 3 or line[3:4] in b" -"),
                f"malformed reply line {line!r}",
            )
            c = int(line[:3])
            check(code is None or c == code, f"reply code changed inside a multi-line reply: {line!r}")
            code = c
            lines.append(line[4:])
            if len(line) == 3 or line[3:4] == b" ":
                return Reply(code, lines)

    def expect(self, code, what="", enhanced=None):
        r = self.reply()
        check(r is not None, f"{what}: expected {code}, got EOF")
        check(r.code == code, f"{what}: expected {code}, got {r!r}")
        if enhanced is not None:
            check(
                r.enhanced() == enhanced,
                f"{what}: expected enhanced status {enhanced}, got {r!r}",
            )
        return r

    def expect_eof(self, timeout=5.0, what=""):
        """The server must close the connection (after any pending bytes) within timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if self.buf:
                fail(f"{what}: expected EOF, got more data {self.buf!r}")
            left = deadline - time.monotonic()
            check(left > 0, f"{what}: server did not close the connection within {timeout}s")
            self.sock.settimeout(left)
            try:
                if not self._fill():
                    return
            except ConnectionResetError:
                return
            except socket.timeout:
                fail(f"{what}: server did not close the connection within {timeout}s")

    def ehlo(self, name="peer.example"):
        self.send(f"EHLO {name}\r\n")
        r = self.expect(250, "EHLO")
        return [l.decode() for l in r.lines[1:]]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def stuff(body):
    """Dot-stuff CRLF-terminated message content and append the end-of-data line."""
    check(body == b"" or body.endswith(b"\r\n"), "content must end with CRLF")
    out = []
    for line in body.split(b"\r\n")[:-1] if body else []:
        out.append(b"." + line if line.startswith(b".") else line)
    return b"".join(l + b"\r\n" for l in out) + b".\r\n"


async def read_reply_async(reader, what):
    """The last line of the next reply on an asyncio stream: (code, line); fails on EOF or a
    malformed line."""
    while True:
        line = await reader.readline()
        if not line:
            fail(f"{what}: EOF instead of a reply")
        check(line.endswith(b"\r\n") and len(line) >= 5, f"{what}: malformed line {line!r}")
        if line[3:4] == b" ":
            return int(line[:3]), line
