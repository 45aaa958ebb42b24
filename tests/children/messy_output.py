"""Output that breaks naive readers: invalid UTF-8, NUL, a huge line, a flood."""

import sys

out = sys.stdout.buffer
out.write(b"bad utf-8: \xff\xfe end\n")
out.write(b"nul: a\x00b\n")
out.write(b"split char: \xc3")  # the rest of "é" arrives in the next write
out.flush()
out.write(b"\xa9 ok\n")
out.write(b'::message nul {"v": "a\\u0000b"}\n')  # JSON NUL: jsonb refuses it too
out.write(b"progress 10%\rprogress 50%\rprogress 100%\n")
out.write(b"x" * (5 * 1024 * 1024))  # 5 MB with no newline yet
out.write(b"\n")
lines = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
chunk = []
for i in range(1, lines + 1):
    chunk.append(b"n %d\n" % i)
    if len(chunk) == 1000:
        out.write(b"".join(chunk))
        chunk = []
out.write(b"".join(chunk))
out.write(b"last line without newline")
out.flush()
