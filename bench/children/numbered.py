"""Throughput and memory: numbered lines, as fast as possible, written in 64 KiB blocks.

argv: COUNT [WIDTH]. Line i is `i` followed by padding up to WIDTH bytes
(newline included), so COUNT * WIDTH bytes are printed in all.
"""

import os
import sys

count = int(sys.argv[1])
width = int(sys.argv[2]) if len(sys.argv) > 2 else 0
fd = sys.stdout.fileno()
block: list[str] = []
size = 0
for i in range(1, count + 1):
    text = str(i)
    if width:
        text = text + " " + "x" * max(0, width - len(text) - 2)
    block.append(text)
    size += len(text) + 1
    if size >= 65536:
        data = ("\n".join(block) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        block, size = [], 0
if block:
    data = ("\n".join(block) + "\n").encode()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
