"""A child that writes files into TASKRUNNER_ARTIFACTS_DIR, as the artifact tests ask.

artifact_maker.py three       three files (one in a subdirectory), exit 0
artifact_maker.py publish     a file, `::artifact` it, then wait for a line on stdin
artifact_maker.py fail        a file, exit 3
artifact_maker.py hang        a file, then sleep until killed
artifact_maker.py hostile     a symlink to /etc/passwd, a linked directory, a FIFO,
                              `::artifact ../escape` and `/etc/passwd`; one good file
"""

import os
import sys
import time
from pathlib import Path

OUT = Path(os.environ["TASKRUNNER_ARTIFACTS_DIR"])


def three() -> int:
    (OUT / "report.txt").write_text("hello artifacts\n")
    (OUT / "data").mkdir()
    (OUT / "data" / "blob.bin").write_bytes(bytes(range(256)) * 4099)  # 1,049,344 bytes
    (OUT / "page.html").write_text("<html><script>alert(document.cookie)</script></html>")
    return 0


def publish() -> int:
    (OUT / "early.txt").write_text("published before the end\n")
    print("::artifact early.txt", flush=True)
    print("published", flush=True)
    sys.stdin.readline()
    (OUT / "late.txt").write_text("written at the end\n")
    return 0


def fail() -> int:
    (OUT / "partial.csv").write_text("a,b\n1,2\n")
    return 3


def hang() -> int:
    (OUT / "progress.log").write_text("step 1\n")
    print("waiting", flush=True)
    while True:
        time.sleep(1)


def hostile() -> int:
    (OUT / "good.txt").write_text("fine\n")
    os.symlink("/etc/passwd", OUT / "passwd")
    os.symlink("/etc", OUT / "etc-dir")
    os.mkfifo(OUT / "pipe")
    print("::artifact ../escape", flush=True)
    print("::artifact /etc/passwd", flush=True)
    print("::artifact passwd", flush=True)
    print("::artifact etc-dir/passwd", flush=True)
    print("::artifact pipe", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(
        {"three": three, "publish": publish, "fail": fail, "hang": hang, "hostile": hostile}[
            sys.argv[1]
        ]()
    )
