"""A child for the outage tests: `line N` for N = 1..COUNT, in paced bursts.

Usage: paced_lines.py COUNT GATE_AT GATE_FILE. Lines 1..GATE_AT come in
bursts of 250 every 20 ms; then it waits for GATE_FILE to exist (the test
has stopped the database meanwhile) and prints the rest as fast as it can.
"""

import os
import sys
import time

count, gate_at, gate_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
n = 0
while n < gate_at:
    burst = b"".join(b"line %d\n" % i for i in range(n + 1, min(n + 250, gate_at) + 1))
    os.write(1, burst)
    n = min(n + 250, gate_at)
    time.sleep(0.02)
while not os.path.exists(gate_file):
    time.sleep(0.01)
while n < count:
    burst = b"".join(b"line %d\n" % i for i in range(n + 1, min(n + 1000, count) + 1))
    os.write(1, burst)
    n = min(n + 1000, count)
