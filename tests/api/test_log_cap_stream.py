"""A stream asking for events the log cap deleted gets `pruned` first, then consecutive events."""

import pytest
from api_helpers import Stream, numbered, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_stream_from_the_start_of_a_capped_run(as_user, make_task, start_worker):
    from taskrunner.models import Run

    task = make_task("capped", numbered("--count", "3000", "--interval", "0"))
    run = task.start()
    start_worker(env={"TASKRUNNER_MAX_LOG_BYTES": "20000"})
    wait_for(lambda: Run.objects.get(pk=run.pk).status == "succeeded", 30)
    first_kept = Run.objects.get(pk=run.pk).log_pruned_before
    assert first_kept > 1
    bob = as_user["bob"]
    for headers, path in (({}, ""), ({"Last-Event-ID": "5"}, ""), ({}, "?tail=100000")):
        with Stream(bob, f"/api/runs/{run.pk}/events/{path}", headers) as stream:
            events = stream.rest()
        assert events[0].event == "pruned" and events[0].id is None
        assert events[0].data == {"first_seq": first_kept}
        seqs = [e.seq for e in events[1:] if e.id is not None]
        assert seqs == list(range(first_kept, seqs[-1] + 1))
        assert events[-1].event == "end"
        lines = [e.data["line"] for e in events if e.event == "log"]
        assert lines[-1] == "line 3000"
    # After an id still stored: no pruned event.
    with Stream(bob, f"/api/runs/{run.pk}/events/", {"Last-Event-ID": str(first_kept)}) as stream:
        events = stream.rest()
    assert events[0].event != "pruned" and events[0].seq == first_kept + 1
