"""Echo each line of standard input back at once (a wake-up round trip for the bench)."""

import os

while True:
    data = os.read(0, 4096)
    if not data:
        break
    os.write(1, data)
