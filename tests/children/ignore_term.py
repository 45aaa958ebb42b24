"""Ignore SIGTERM and keep printing: only SIGKILL ends it."""

import os
import signal
import time

# os.write, not print: a signal arriving inside print() would re-enter its buffer.
signal.signal(signal.SIGTERM, lambda *_: os.write(1, b"got SIGTERM, ignoring it\n"))
print("ready", flush=True)
while True:
    time.sleep(0.05)
