"""Control latency: a child with a grandchild in its group and one that left it (setsid).

Prints `ready` once both descendants run, then idles until stopped or killed.
"""

import os
import subprocess
import sys
import time

if len(sys.argv) > 1 and sys.argv[1] == "sleeper":
    if len(sys.argv) > 2 and sys.argv[2] == "setsid":
        os.setsid()
    while True:
        time.sleep(0.05)

kids = [
    subprocess.Popen([sys.executable, __file__, "sleeper"]),
    subprocess.Popen([sys.executable, __file__, "sleeper", "setsid"]),
]
time.sleep(0.1)
print("ready", flush=True)
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    time.sleep(0.05)
for kid in kids:
    kid.kill()
