"""Print numbered lines `line N` every INTERVAL seconds, COUNT of them (0: forever).

Options: --double-fork starts a daemon that leaves the tree (`daemon N`);
--grandchild starts a child of its own that also prints (`grand N`);
--setsid-descendant starts a descendant that leaves the process group with
setsid() (as Playwright's Chromium does) and prints `escapee N`.
--stamp ends every line (of every process) with the time it was printed
(`line N 1700000000.123456`), so a test can tell when a line was printed
without watching the clock itself.
"""

import argparse
import os
import subprocess
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--count", type=int, default=0)
parser.add_argument("--interval", type=float, default=0.02)
parser.add_argument("--grandchild", action="store_true")
parser.add_argument("--setsid-descendant", action="store_true")
parser.add_argument("--double-fork", action="store_true")
parser.add_argument("--exit-code", type=int, default=0)
parser.add_argument("--stamp", action="store_true")
args = parser.parse_args()

# Each line is one write(): processes sharing the pipe cannot interleave within
# a line (print() with PYTHONUNBUFFERED writes the text and "\n" separately).
if args.stamp:
    LOOP = (
        "import os,time\ni=0\nwhile True:\n    i+=1\n"
        "    os.write(1, b'{0} %d %.6f\\n' % (i, time.time()))\n    time.sleep(0.05)\n"
    )
else:
    LOOP = (
        "import os,time\ni=0\n"
        "while True:\n    i+=1\n    os.write(1, b'{0} %d\\n' % i)\n    time.sleep(0.05)\n"
    )
helpers = []
if args.grandchild:
    helpers.append(subprocess.Popen([sys.executable, "-c", LOOP.format("grand")]))
if args.setsid_descendant:
    helpers.append(
        subprocess.Popen([sys.executable, "-c", LOOP.format("escapee")], start_new_session=True)
    )
if args.double_fork:
    # A daemon the classic way: the middle process starts it in a new session
    # and exits, so the daemon is reparented away from this tree entirely.
    middle = (
        "import subprocess,sys; subprocess.Popen([sys.executable, '-c', sys.argv[1]], "
        "start_new_session=True)"
    )
    subprocess.run([sys.executable, "-c", middle, LOOP.format("daemon")], check=True)
for proc in helpers:
    print(f"helper pid={proc.pid} pgid={os.getpgid(proc.pid)}", flush=True)

i = 0
while args.count == 0 or i < args.count:
    i += 1
    if args.stamp:
        os.write(1, b"line %d %.6f\n" % (i, time.time()))
    else:
        os.write(1, b"line %d\n" % i)
    time.sleep(args.interval)
sys.exit(args.exit_code)
