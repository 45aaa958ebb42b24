"""Log lines stored many to a row: EventChunk replaces the row-per-event RunEvent.

The data migration packs every existing event into the new table (log lines
of a run in chunks, other events a row each) with the store's own packer, so
a database made by earlier code keeps every line, with its seq, stream, time
and `continued` mark. Going back unpacks the chunks into a row per event.
"""

import django.db.models.deletion
from django.db import migrations, models

BATCH = 20_000


def _old_event_tuple(row):
    kind, stream, text, data, ts = row
    return (kind, stream, text, data, ts)


def pack_events(apps, schema_editor):
    from taskrunner.events.store import pack_rows

    RunEvent = apps.get_model("taskrunner", "RunEvent")
    EventChunk = apps.get_model("taskrunner", "EventChunk")
    run_ids = RunEvent.objects.values_list("run_id", flat=True).distinct().order_by("run_id")
    for run_id in list(run_ids):
        after = 0
        while True:
            rows = list(
                RunEvent.objects.filter(run_id=run_id, seq__gt=after)
                .order_by("seq")
                .values_list("seq", "kind", "stream", "text", "data", "ts")[:BATCH]
            )
            if not rows:
                break
            # Seqs are contiguous within a run; a gap (never made by the old
            # code) starts a new group so no event is given another seq.
            group: list[tuple] = []
            first = None
            chunks = []
            for seq, *rest in rows:
                if group and seq != first + len(group):
                    chunks += pack_rows(run_id, first, group, rest[-1])
                    group = []
                if not group:
                    first = seq
                group.append(_old_event_tuple(rest))
            chunks += pack_rows(run_id, first, group, group[-1][4])
            EventChunk.objects.bulk_create(
                [
                    EventChunk(
                        run_id=r[0], first_seq=r[1], last_seq=r[2], kind=r[3], ts=r[4],
                        body=r[5], size=r[6],
                    )
                    for r in chunks
                ]
            )
            after = rows[-1][0]


def unpack_events(apps, schema_editor):
    from taskrunner.events.store import RowReader

    RunEvent = apps.get_model("taskrunner", "RunEvent")
    EventChunk = apps.get_model("taskrunner", "EventChunk")
    reader = RowReader()
    batch = []
    for chunk in EventChunk.objects.order_by("run_id", "last_seq").iterator():
        row = (chunk.run_id, chunk.first_seq, chunk.last_seq, chunk.kind, chunk.ts, chunk.body)
        for e in reader.events(row):
            batch.append(
                RunEvent(
                    run_id=chunk.run_id, seq=e.seq, kind=e.kind, stream=e.stream,
                    text=e.text, data=e.data, ts=e.ts,
                )
            )
        if len(batch) >= BATCH:
            RunEvent.objects.bulk_create(batch)
            batch = []
    RunEvent.objects.bulk_create(batch)


class Migration(migrations.Migration):
    dependencies = [
        ("taskrunner", "0003_task_pass_env"),
    ]

    operations = [
        migrations.CreateModel(
            name="EventChunk",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("first_seq", models.PositiveBigIntegerField()),
                ("last_seq", models.PositiveBigIntegerField()),
                (
                    "kind",
                    models.CharField(
                        choices=[("log", "Log"), ("progress", "Progress"), ("status", "Status"), ("message", "Message")],
                        max_length=8,
                    ),
                ),
                ("ts", models.DateTimeField()),
                ("body", models.TextField()),
                ("size", models.PositiveIntegerField()),
                (
                    "run",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="event_chunks",
                        to="taskrunner.run",
                    ),
                ),
            ],
            options={
                "ordering": ["run", "last_seq"],
                "constraints": [
                    models.UniqueConstraint(fields=("run", "last_seq"), name="event_chunk_run_last_seq")
                ],
            },
        ),
        migrations.RunPython(pack_events, unpack_events),
        migrations.DeleteModel(name="RunEvent"),
    ]
