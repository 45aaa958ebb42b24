"""Finding dead workers and ending what they left behind.

A worker is dead when it has been silent longer than
`TASKRUNNER_WORKER_DEAD_AFTER` (`Worker.objects.dead()`), or, on this same
machine (same hostname and boot), at once when its process is gone. Silence
is judged only over time the judging worker could see the database itself:
after an outage every worker's last heartbeat is old and they all reconnect
at about the same moment, so a worker that regained the database less than
`dead_after` (plus a heartbeat and the longest retry wait) ago declares no one
dead by silence: the others get that long from its reconnection to heartbeat
again.

A dead worker's live runs become `lost`; their processes on this host are
killed first (identified by pid and create time, and by the run's key in
their environment), those on other hosts are left to a worker there: only a
worker of a run's host (`TASKRUNNER_HOST`) ever signals its processes, since
a pid means nothing on another machine (or in another PID namespace).

A host that was cut off (its workers silent, their runs marked `lost` by a
worker elsewhere) may still have those runs' processes when it comes back:
`kill_leftovers`, called when a worker starts, kills them, identity-checked. The
files a lost run left in its artifact directory on this host are kept.
"""

import logging
from datetime import datetime

from django.utils import timezone

from taskrunner import conf
from taskrunner.models import Run, RunStatus, Worker
from taskrunner.process.tree import ProcessTree, process_identity
from taskrunner.worker.artifacts import collect_leftovers
from taskrunner.worker.database import RETRY_MAX_SECONDS, boot_id

logger = logging.getLogger(__name__)


def dead_workers(me: Worker, contact_since: datetime, now: datetime) -> list[Worker]:
    others = Worker.objects.filter(stopped_at__isnull=True).exclude(pk=me.pk)
    # The others need dead_after from the moment this worker could see the
    # database again, plus a heartbeat and a retry of their own to reconnect.
    margin = conf.worker_dead_after() + conf.heartbeat_seconds() + RETRY_MAX_SECONDS
    in_contact = (now - contact_since).total_seconds() > margin
    silent = set(others.dead(now).values_list("pk", flat=True)) if in_contact else set()
    here = boot_id()
    return [
        other
        for other in others
        if other.pk in silent
        or (other.hostname == me.hostname and other.boot_id == here and _process_gone(other))
    ]


def _process_gone(other: Worker) -> bool:
    identity = process_identity(other.pid)
    return identity is None or (
        other.create_time is not None and abs(identity - other.create_time) > 0.01
    )


def reconcile_dead_workers(me: Worker, contact_since: datetime) -> None:
    """End what dead workers left behind: kill their runs' processes here, mark the runs lost."""
    now = timezone.now()
    for other in dead_workers(me, contact_since, now):
        logger.warning("worker is dead worker_id=%s host=%s", other.pk, other.hostname)
        for run in Run.objects.live().filter(worker=other):
            survivors = 0
            if run.hostname == me.hostname and run.pid:
                tree = ProcessTree(
                    run.pid, run.pid_create_time, run.pgid or run.pid, run.process_key
                )
                tree.kill()
                survivors = len(tree.alive())
                _keep_leftover_files(run.pk)
            where = "" if run.hostname == me.hostname else f" on {run.hostname}"
            run.finish(
                RunStatus.LOST,
                error=f"Its worker ({other}) died{where}; the run could not be completed."
                + (f" {survivors} process(es) survived SIGKILL." if survivors else ""),
            )
            logger.warning("run lost run_id=%s worker_id=%s", run.pk, other.pk)
        Worker.objects.filter(pk=other.pk).update(stopped_at=now)


def _keep_leftover_files(run_id: int) -> None:
    """The files a lost run left on this host, kept as any run's; never in reconciling's way."""
    try:
        kept = collect_leftovers(run_id)
        if kept:
            logger.info("kept a lost run's files run_id=%s artifacts=%s", run_id, kept)
    except Exception:
        logger.exception("keeping a lost run's files failed run_id=%s", run_id)


def kill_leftovers(me: Worker) -> None:
    """Kill what is left here of runs marked `lost` while their host's worker was away.

    Only runs of this host, of a worker of this same boot (a reboot left
    nothing), that have no worker alive here any more; each process is found by
    the run's pid and create time or by the run's key in its environment, so
    a stranger that reused a pid is never signalled.
    """
    alive_here = Worker.objects.filter(hostname=me.hostname, stopped_at__isnull=True).exclude(
        pk=me.pk
    )
    runs = (
        Run.objects.filter(status=RunStatus.LOST, hostname=me.hostname, worker__boot_id=boot_id())
        .exclude(worker=me)
        .exclude(worker__in=alive_here)
    )
    for run in runs:
        if run.pid is None:
            continue
        tree = ProcessTree(run.pid, run.pid_create_time, run.pgid or run.pid, run.process_key)
        if not tree.alive():
            continue
        logger.warning("killing what is left of a lost run run_id=%s pid=%s", run.pk, run.pid)
        tree.kill()
