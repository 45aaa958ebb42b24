"""Print COUNT numbered lines as fast as the pipe takes them, once GO exists.

stdout is made non-blocking so that this child can tell when the reader has
stopped reading: a write that would block (the pipe is full) is noted in the
file BLOCKED ("blocked N": lines 1..N-1 are written), then the child waits
until the pipe takes more, notes "resumed N" and goes on. Each write is
whole lines under PIPE_BUF bytes, so a write is all or nothing.

Usage: flood.py COUNT GO BLOCKED
"""

import errno
import os
import select
import sys
import time

count, go, blocked = int(sys.argv[1]), sys.argv[2], sys.argv[3]
print("waiting for go", flush=True)
while not os.path.exists(go):
    time.sleep(0.01)
os.set_blocking(1, False)
PAD = "x" * 60
LINES_PER_WRITE = 50  # 50 lines of ~75 bytes: under PIPE_BUF (4096)
i = 0
while i < count:
    upto = min(count, i + LINES_PER_WRITE)
    chunk = "".join(f"f {n} {PAD}\n" for n in range(i + 1, upto + 1)).encode()
    while True:
        try:
            os.write(1, chunk)
            break
        except OSError as exc:
            if exc.errno != errno.EAGAIN:
                raise
            with open(blocked, "a") as note:
                note.write(f"blocked {i + 1}\n")
            select.select([], [1], [])
            with open(blocked, "a") as note:
                note.write(f"resumed {i + 1}\n")
    i = upto
