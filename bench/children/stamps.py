"""Log latency: a time.time() stamp every 20 ms (and the same as ::progress for pollers).

argv: COUNT [INTERVAL]. Each tick prints `::progress I/COUNT STAMP` (what the
status endpoint shows) and then the log line `stamp I STAMP`.
"""

import sys
import time

count = int(sys.argv[1])
interval = float(sys.argv[2]) if len(sys.argv) > 2 else 0.02
out = sys.stdout
start = time.monotonic()
for i in range(1, count + 1):
    now = time.time()
    out.write(f"::progress {i}/{count} {now:.6f}\nstamp {i} {now:.6f}\n")
    out.flush()
    delay = start + i * interval - time.monotonic()
    if delay > 0:
        time.sleep(delay)
