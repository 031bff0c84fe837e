#!/usr/bin/env python3
"""Runs a command on a new pseudo-terminal, as a person at a terminal would.

  pty_run.py [--timeout S] STEP... -- COMMAND [ARG...]

STEP is `expect:REGEX` (wait until the terminal output so far matches, from
where the last match ended) or `send:TEXT` (type TEXT; \\r, \\x03 and other
Python escapes work). The terminal becomes the command's controlling
terminal and its stdin, stdout and stderr, so `docker run -it` sees a TTY
although the caller has no stdin. Prints the whole transcript on stdout and
exits with the command's exit status, 124 when a step or the command timed
out (the command is then killed), 125 when it ended before a step matched.
"""

import codecs
import os
import re
import select
import signal
import subprocess
import sys
import time


def main(argv):
    timeout = 60.0
    if argv[:1] == ["--timeout"]:
        timeout = float(argv[1])
        argv = argv[2:]
    if "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 64
    split = argv.index("--")
    steps, command = argv[:split], argv[split + 1:]

    controller, terminal = os.openpty()
    child = subprocess.Popen(
        command,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
        # The terminal becomes the new session's controlling terminal.
        preexec_fn=lambda: __import__("fcntl").ioctl(0, __import__("termios").TIOCSCTTY, 0),
    )
    os.close(terminal)
    deadline = time.monotonic() + timeout
    transcript = b""
    searched_to = 0

    def read_some(wait):
        nonlocal transcript
        ready, _, _ = select.select([controller], [], [], wait)
        if not ready:
            return True
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: every writer of the terminal is gone
            return False
        if not chunk:
            return False
        transcript += chunk
        return True

    status = None
    for step in steps:
        kind, _, value = step.partition(":")
        if kind == "send":
            os.write(controller, codecs.decode(value, "unicode_escape").encode())
            continue
        if kind != "expect":
            print(f"pty_run.py: unknown step {step!r}", file=sys.stderr)
            child.kill()
            return 64
        pattern = re.compile(value.encode())
        while True:
            found = pattern.search(transcript, searched_to)
            if found:
                searched_to = found.end()
                break
            left = deadline - time.monotonic()
            if left <= 0:
                status = 124
                break
            if not read_some(min(left, 0.2)) and child.poll() is not None:
                status = 125
                break
        if status is not None:
            break

    if status is None:
        # Drain the output until the command ends.
        while child.poll() is None and time.monotonic() < deadline:
            read_some(0.2)
        while read_some(0):
            if not select.select([controller], [], [], 0)[0]:
                break
        if child.poll() is None:
            status = 124
    if status is not None:
        os.killpg(child.pid, signal.SIGKILL)
    code = child.wait()
    os.close(controller)
    sys.stdout.write(transcript.decode(errors="replace"))
    sys.stdout.flush()
    return status if status is not None else (code if code >= 0 else 128 - code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
