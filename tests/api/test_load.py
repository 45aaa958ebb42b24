"""Load, bounded: 10 runs printing 200 lines a second across two workers, 20 SSE viewers.

The full version (100 runs, 200 viewers, 60 s, with latency and memory
figures) is bench/load.py in `make bench`; this one holds the correctness
part in `make test`: every line stored once, and delivered to every viewer
once and in order, with no error anywhere. No timing threshold here.
"""

import asyncio
import sys

import pytest
from api_helpers import SERVER_ENV, wait_for

from bench.load import RATE_CHILD, Tally, stored_problems, watch_all

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

RUNS = 10
RATE = 200
SECONDS = 5
VIEWERS = 20
EXPECTED = RATE * SECONDS
CLEAN = {"missing": 0, "repeated": 0, "out_of_order": 0}


def test_every_line_reaches_every_viewer_once_and_in_order(
    start_server, start_worker, make_task, tokens
):
    from taskrunner.models import Run

    api = start_server(env=SERVER_ENV)
    workers = [start_worker("--concurrency", str(RUNS // 2)) for _ in range(2)]
    task = make_task(
        "flood",
        argv=[sys.executable, RATE_CHILD, str(RATE), str(SECONDS), "wait"],
        max_concurrent=RUNS,
    )
    run_ids = [task.start({}).pk for _ in range(RUNS)]
    wait_for(
        lambda: Run.objects.filter(pk__in=run_ids, status="running").count() == RUNS, timeout=60
    )
    # Both workers carry some of the load.
    assert len(set(Run.objects.filter(pk__in=run_ids).values_list("worker", flat=True))) == 2

    def start() -> None:  # runs in a thread of its own: its connection is closed there
        from django.db import connections

        try:
            for run in Run.objects.filter(pk__in=run_ids):
                run.request("input", data="go")
        finally:
            connections.close_all()

    tallies: list[Tally] = asyncio.run(watch_all(api.url, tokens["alice"], run_ids, VIEWERS, start))

    assert len(tallies) == VIEWERS
    for tally in tallies:
        assert tally.errors == [], tally.errors
        assert tally.ended, f"viewer of run {tally.run_id} never got the end event"
        assert tally.problems(EXPECTED) == CLEAN, tally.run_id
        assert len(tally.numbers) == EXPECTED
    wait_for(
        lambda: Run.objects.filter(pk__in=run_ids, status="succeeded").count() == RUNS,
        timeout=60,
    )
    assert stored_problems(run_ids, EXPECTED) == CLEAN
    for worker in workers:
        assert "Traceback" not in worker.log()
    assert "Traceback" not in api.log()


def test_the_tally_sees_a_missing_a_repeated_and_a_reordered_line():
    """The check above can fail: each kind of problem is counted."""
    tally = Tally(1, numbers=[1, 3, 2, 2], seqs=[1, 2, 3, 4])
    assert tally.problems(4) == {"missing": 1, "repeated": 1, "out_of_order": 2}
