"""What the contract says about odd output, through a real child, worker and the store.

A 10 MB line is split into pieces of at most 64 KiB, each but the last marked
`continued`; NUL is replaced; invalid UTF-8 is replaced. The store keeps each
piece as its own event with its own seq, the SSE stream gives them back as
such, and the text log joins the pieces back into the one line.
"""

import json
import sys

import httpx

from tests.conftest import wait_for

BIG = 10 * 1024 * 1024
PIECE = 64 * 1024

CHILD = f"""
import sys
out = sys.stdout.buffer
out.write(b"before\\n")
out.write(b"0123456789" * ({BIG} // 10) + b"\\n")
out.write(b"nul: a\\x00b\\x00\\n")
out.write(b"bad utf-8: \\xff\\xfe end \\xc3\\n")
out.write(b"after\\n")
"""


def test_a_10_mb_line_nul_and_invalid_utf8_survive_the_store(
    transactional_db, start_worker, start_server, personas
):
    from taskrunner.events import store
    from taskrunner.models import FINAL_STATUSES, ApiToken, Run, Task

    task = Task.objects.create(name="odd-output", argv=[sys.executable, "-c", CHILD], params=[])
    run = task.start({}, user=personas["bob"])
    start_worker()
    wait_for(lambda: Run.objects.filter(pk=run.pk, status__in=FINAL_STATUSES).exists(), timeout=120)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error

    logs = [e for batch in store.iter_after(run.pk, 0, log_only=True) for e in batch]
    big = "0123456789" * (BIG // 10)
    pieces = logs[1:-3]
    assert logs[0].text == "before"
    assert len(pieces) == BIG // PIECE
    assert all(len(p.text.encode()) <= PIECE for p in pieces)
    assert [p.continued for p in pieces] == [True] * (len(pieces) - 1) + [False]
    assert "".join(p.text for p in pieces) == big
    assert [e.text for e in logs[-3:]] == [
        "nul: a\ufffdb\ufffd",
        "bad utf-8: \ufffd\ufffd end \ufffd",
        "after",
    ]
    seqs = [e.seq for e in logs]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # one seq per piece

    token = ApiToken.create_for(personas["bob"])[1]
    server = start_server()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
        text = http.get(f"/api/runs/{run.pk}/log/").text
        assert text == "\n".join(["before", big, *[e.text for e in logs[-3:]]]) + "\n"

        streamed = []
        with http.stream("GET", f"/api/runs/{run.pk}/events/") as response:
            for line in response.iter_lines():
                if line.startswith("event: end"):
                    break
                if line.startswith("data: ") and '"line"' in line:
                    streamed.append(json.loads(line[6:]))
        assert [e["seq"] for e in streamed] == seqs
        assert [e["line"] for e in streamed] == [e.text for e in logs]
        assert [e.get("continued", False) for e in streamed] == [e.continued for e in logs]
