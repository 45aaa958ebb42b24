"""Ignore SIGTERM and keep printing: only SIGKILL ends it."""

import signal
import time

signal.signal(signal.SIGTERM, lambda *_: print("got SIGTERM, ignoring it", flush=True))
print("ready", flush=True)
while True:
    time.sleep(0.05)
