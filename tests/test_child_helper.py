"""`taskrunner.child` prints the contract's protocol lines, as a real child process.

The lines a child prints through the helper are read back with the
supervisor's own parser (`parse_protocol`), so helper and supervisor cannot
drift apart. No database is needed.
"""

import json
import subprocess
import sys

from taskrunner.process.lines import parse_protocol
from tests.conftest import ROOT

SCRIPT = """
import sys
from taskrunner import child

child.progress(42, 100, "half\\nway  there")
child.progress(0.25)
child.progress(3, 7)
child.result({"path": "/tmp/x.xml", "size_bytes": 123, "note": "line\\nbreak"})
child.message("found", {"url": "/a b", "n": 1})
child.message("ping")
print("params", child.params(), "run", child.run_id())
try:
    child.message("two words", {})
except ValueError as exc:
    print("refused:", exc)
child.result([1, 2], stream=sys.stderr)
"""


def run_child(env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )


def test_helper_lines_are_the_protocol():
    out = run_child().stdout.splitlines()
    assert out[:6] == [
        "::progress 42/100 half way there",
        "::progress 0.25",
        "::progress 3/7",
        '::result {"path":"/tmp/x.xml","size_bytes":123,"note":"line\\nbreak"}',
        '::message found {"url":"/a b","n":1}',
        "::message ping null",
    ]
    events = [parse_protocol(line) for line in out[:6]]
    assert [e.kind for e in events] == ["progress"] * 3 + ["result", "message", "message"]
    assert events[0].data == {
        "current": 42,
        "total": 100,
        "fraction": 0.42,
        "message": "half way there",
    }
    assert events[1].data["fraction"] == 0.25
    assert events[3].data == {"path": "/tmp/x.xml", "size_bytes": 123, "note": "line\nbreak"}
    assert events[4].data == {"name": "found", "data": {"url": "/a b", "n": 1}}
    assert events[5].data == {"name": "ping", "data": None}


def test_helper_reads_the_runs_environment_and_refuses_bad_names():
    result = run_child({"TASKRUNNER_RUN_ID": "17", "TASKRUNNER_PARAMS": json.dumps({"n": 3})})
    out = result.stdout.splitlines()
    assert "params {'n': 3} run 17" in out
    assert any(line.startswith("refused: a message name is one word") for line in out)
    # Every helper takes a stream, e.g. to keep stdout for data.
    assert result.stderr.splitlines() == ["::result [1,2]"]
    assert "params {} run None" in run_child().stdout.splitlines()
