"""Speaks the protocol with taskrunner.child and echoes its standard input."""

import sys

from taskrunner import child

child.progress(1, 4, "starting")
child.message("hello", {"n": 1})
print("::progress not-a-number", flush=True)  # not protocol: logged as is
print("::unknown thing", flush=True)
print(f"params {child.params()}", flush=True)
print("waiting for input", flush=True)
for line in sys.stdin:
    line = line.rstrip("\n")
    print(f"echo {line}", flush=True)
    if line == "done":
        break
child.progress(0.75)
child.result({"answer": 42, "params": child.params()})
