#!/usr/bin/env python3
"""Drives the appliance's serial console (qemu's ttyS0 as a Unix socket) for image/boot-test.sh.

It owns the operator's side of the console: press a key on the live console, expect the login
prompt, log in as root, run a few commands and print their output between markers, then ask
the appliance to power off. Every wait is bounded; a step that times out exits non-zero with
what was last seen. The serial output is also in qemu's chardev log file.

Usage: serial.py SOCKET PASSWORD COMMAND...   (each COMMAND's output is printed as
`SERIAL <n> <line>`; the exit status of each as `SERIAL <n> status=<code>`)
"""
import re
import socket
import sys
import time

STEP_TIMEOUT = 60.0


class Console:
    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.settimeout(0.5)
        self.seen = ""

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode())

    def expect(self, pattern: str, timeout: float = STEP_TIMEOUT) -> "re.Match[str]":
        """Reads until `pattern` (a regex) matches the text seen since the last match."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern, re.S)
        while True:
            found = regex.search(self.seen)
            if found:
                self.seen = self.seen[found.end():]
                return found
            if time.monotonic() > deadline:
                tail = self.seen[-400:].replace("\r", "")
                raise TimeoutError(f"no {pattern!r} within {timeout:.0f}s; last seen:\n{tail}")
            try:
                chunk = self.sock.recv(4096)
            except socket.timeout:
                continue
            if not chunk:
                raise EOFError(f"serial console closed while waiting for {pattern!r}")
            self.seen += chunk.decode(errors="replace")


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, password, commands = sys.argv[1], sys.argv[2], sys.argv[3:]
    console = Console(path)
    # The live console redraws every few seconds; any key leaves it for the login prompt.
    # `q` leaves the TUI, any key the interim view. A key pressed while the view is being
    # drawn may wait in the line discipline until the console reads: press again every few
    # seconds until the prompt shows.
    # (The console's header may have been drawn before this connected: do not wait for it.)
    deadline = time.monotonic() + 2 * STEP_TIMEOUT
    while True:
        console.send("q")
        try:
            console.expect(r"login: ", timeout=8)
            break
        except TimeoutError:
            if time.monotonic() > deadline:
                raise
    print("SERIAL login-prompt")
    # Ctrl-U first: a `q` that arrived after the prompt appeared is not part of the name.
    console.send("\x15root\r")
    console.expect(r"Password: ")
    console.send(password + "\r")
    console.expect(r"# ")
    print("SERIAL logged-in")
    # A plain prompt and no terminal tricks, so markers are easy to find.
    console.send("export PS1='# ' TERM=dumb; stty -echo\r")
    console.expect(r"# ")
    for n, command in enumerate(commands):
        console.send(f"echo @@begin{n}@@; {command}; echo @@end{n}@@ status=$?\r")
        found = console.expect(rf"@@begin{n}@@\r?\n(.*?)@@end{n}@@ status=(\d+)")
        for line in found.group(1).replace("\r", "").splitlines():
            print(f"SERIAL {n} {line}")
        print(f"SERIAL {n} status={found.group(2)}")
    console.send("systemctl poweroff\r")
    print("SERIAL poweroff-sent")
    # Stay connected until qemu ends (qemu drops input still queued when the client leaves).
    try:
        console.expect(r"(?!)", timeout=STEP_TIMEOUT)
    except EOFError:
        print("SERIAL console-closed")
    except TimeoutError:
        print("SERIAL console-still-open")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (TimeoutError, EOFError, OSError) as error:
        print(f"SERIAL error {error}")
        sys.exit(1)
