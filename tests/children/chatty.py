"""Print COUNT numbered lines on stdout, every fifth one also on stderr, then exit.

    chatty.py COUNT [EXIT_CODE]

Also prints one protocol line (::progress), which must not show in the log.
"""

import sys

count = int(sys.argv[1])
exit_code = int(sys.argv[2]) if len(sys.argv) > 2 else 0
for i in range(1, count + 1):
    print(f"out {i}", flush=True)
    if i % 5 == 0:
        print(f"err {i}", file=sys.stderr, flush=True)
    if i == count // 2:
        print(f"::progress {i}/{count} half way", flush=True)
sys.exit(exit_code)
