"""A crawler-like child for the browser tests.

Prints `line N` (N from 1) at `--rate` lines per second, with a few special
lines mixed in (stderr, ANSI colours, HTML that must show as text); starts a
grandchild so pausing and aborting must reach it too; `--total` stops after
that many numbered lines (0: run until aborted). Lines are written in bursts
every 10 ms so high rates are exact. Imports nothing from the project.
"""

import argparse
import subprocess
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--total", type=int, default=0)
    args = parser.parse_args()
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    out = sys.stdout
    print(f"starting (helper pid {helper.pid})", flush=True)
    print("\x1b[1;32mgreen and bold\x1b[0m then plain \x1b[31mred\x1b[0m", flush=True)
    print("\x1b[38;5;208morange\x1b[0m \x1b[38;2;10;20;30mrgb\x1b[0m\x1b[K", flush=True)
    print("<script>document.title='pwned'</script><b>not bold</b>", flush=True)
    print("a warning on stderr", file=sys.stderr, flush=True)
    start = time.monotonic()
    n = 0
    try:
        while args.total == 0 or n < args.total:
            due = int((time.monotonic() - start) * args.rate) + 1
            if args.total:
                due = min(due, args.total)
            if due > n:
                out.write("".join(f"line {i}\n" for i in range(n + 1, due + 1)))
                out.flush()
                if n // 1000 != due // 1000 and args.total:
                    out.write(f"::progress {due}/{args.total} printing\n")
                n = due
            time.sleep(0.01 if args.rate > 100 else min(0.05, 1 / args.rate))
    finally:
        helper.kill()
    print(f"done after {n} lines", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
