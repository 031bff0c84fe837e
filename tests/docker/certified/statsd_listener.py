"""A StatsD listener for docker-test: prints every UDP packet's lines
received on PORT until one matches PATTERN (exit 0) or SECONDS pass
(exit 1).

    python3 statsd_listener.py PORT PATTERN SECONDS
"""

import re
import socket
import sys
import time

port, pattern, seconds = int(sys.argv[1]), re.compile(sys.argv[2]), float(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", port))
deadline = time.monotonic() + seconds
while True:
    left = deadline - time.monotonic()
    if left <= 0:
        sys.exit(1)
    sock.settimeout(left)
    try:
        data, _ = sock.recvfrom(65535)
    except socket.timeout:
        sys.exit(1)
    for line in data.decode("utf-8", "replace").splitlines():
        print(line, flush=True)
        if pattern.search(line):
            sys.exit(0)
