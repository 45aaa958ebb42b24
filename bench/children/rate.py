"""Dashboard and fan-out: RATE numbered lines a second for SECONDS, in ticks of 10 ms.

argv: RATE SECONDS [wait]. Ticks of 10 ms (one line per tick below 100
lines a second). Each line carries the time its tick was printed
(`line N at T of ...`), so a client can tell each line's latency. With
`wait`, prints `ready` and first waits for a line on standard input (so
every viewer is connected before the flood).
"""

import sys
import time

rate = int(sys.argv[1])
seconds = float(sys.argv[2])
if len(sys.argv) > 3 and sys.argv[3] == "wait":
    print("ready", flush=True)
    sys.stdin.readline()
out = sys.stdout
tick = 0.01 if rate >= 100 else 1 / rate
per_tick = max(1, round(rate * tick))
ticks = round(seconds / tick)
start = time.monotonic()
n = 0
for t in range(ticks):
    lines = []
    printed = time.time()
    for _ in range(per_tick):
        n += 1
        lines.append(f"line {n} at {printed:.6f} of a steady flood, the kind a crawler prints\n")
    out.write("".join(lines))
    out.flush()
    delay = start + (t + 1) * tick - time.monotonic()
    if delay > 0:
        time.sleep(delay)
