"""Every process of a run, found and signalled without hitting a stranger.

A run's child is started in a session of its own, so its process group holds
it and whatever it forks. Some descendants leave the group (Playwright starts
Chromium with `setsid()`), and some double-fork away from the tree; the child
is also given a random key in its environment (TASKRUNNER_PROCESS_KEY) that
all descendants inherit. A run's processes are therefore:

- the members of its process group (one `killpg` reaches them atomically),
- the leader's descendants, wherever their group,
- any process carrying the run's key in its environment.

Identity is checked before every signal: a process is a psutil.Process, which
remembers its create time and refuses to signal a reused pid.
"""

import logging
import os
import signal
import threading
from collections.abc import Callable

import psutil

logger = logging.getLogger(__name__)

KEY_VARIABLE = "TASKRUNNER_PROCESS_KEY"


def process_identity(pid: int) -> float | None:
    """The create time of `pid`, or None if there is no such process."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _has_key(proc: psutil.Process, key: str) -> bool:
    try:
        return proc.environ().get(KEY_VARIABLE) == key
    except (psutil.Error, OSError):
        return False


# Create times are read in clock ticks: a descendant may look this much older.
CREATE_TIME_SLACK = 0.1


def find_by_key(key: str, since: float | None = None) -> list[psutil.Process]:
    """Processes whose environment carries this run's key (zombies excluded).

    `since`: the run's leader's create time. Only its descendants carry the
    key, and none is older than it, so older processes (the machine's own
    services) are passed over without reading their environment: a read of
    every process's environment took milliseconds, in the way of the next
    pause or abort.
    """
    if not key:
        return []
    oldest = since - CREATE_TIME_SLACK if since is not None else None
    found = []
    for proc in psutil.process_iter(["create_time"]):
        if proc.pid == os.getpid():
            continue
        created = proc.info["create_time"]
        if oldest is not None and created is not None and created < oldest:
            continue
        if _has_key(proc, key):
            found.append(proc)
    return found


def _children_from_proc(pid: int) -> list[int] | None:
    """`pid`'s children as the kernel lists them per thread (None: not known this way).

    `/proc/PID/task/TID/children` (Linux 3.5+, CONFIG_PROC_CHILDREN) names a
    process's children without a walk of the whole process table: reading it
    for a run's few processes takes microseconds where the table takes
    milliseconds on a busy machine.
    """
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    children: list[int] = []
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as listing:
                children += map(int, listing.read().split())
        except FileNotFoundError:
            if tid == str(pid):
                return None  # the main thread's listing is missing: not supported
        except OSError:
            continue  # a thread that ended meanwhile
    return children


class ProcessTree:
    """The processes of one run, remembered across calls so escapees stay known."""

    def __init__(self, pid: int, create_time: float | None, pgid: int, key: str = ""):
        self.pid = pid
        self.pgid = pgid
        self.key = key
        self.leader: psutil.Process | None = None
        try:
            leader = psutil.Process(pid)
            if create_time is None or abs(leader.create_time() - create_time) < 0.01:
                self.leader = leader
        except psutil.Error:
            pass
        # The oldest a process carrying the key can be (None: look at all).
        self.since = create_time
        # Processes seen once as part of the run; psutil objects keep identity.
        self.known: dict[int, psutil.Process] = {}
        # The worker walks a tree from more than one thread (pausing, sampling).
        self._lock = threading.RLock()
        self.defer_sweeps = False  # see sweep()
        self._sweeps: list[Callable[[], object]] = []
        if self.leader is not None:
            self.known[pid] = self.leader

    def _group_is_ours(self) -> bool:
        """True while killpg(pgid) can only reach this run's processes.

        A group id cannot be reused while any member of the group exists; the
        leader (pid == pgid) is ours, or a known member is still in the group.
        """
        for proc in list(self.known.values()):
            try:
                if proc.is_running() and os.getpgid(proc.pid) == self.pgid:
                    return True
            except (psutil.Error, ProcessLookupError):
                continue
        return False

    def refresh(self, *, scan_environment: bool = False) -> list[psutil.Process]:
        with self._lock:
            self._run_sweeps()
            return self._refresh(scan_environment)

    def _refresh(self, scan_environment: bool) -> list[psutil.Process]:
        """Find the run's live processes now, and remember them.

        One pass over the process table finds every descendant of a known
        process (however it left the group); zombies stay known, since an
        unreaped leader still holds the group id, but are not returned.
        """
        if not self._learn_descendants():
            by_parent: dict[int, list[psutil.Process]] = {}
            for proc in psutil.process_iter(["ppid"]):
                by_parent.setdefault(proc.info["ppid"], []).append(proc)
            frontier = list(self.known)
            while frontier:
                for child in by_parent.get(frontier.pop(), []):
                    if child.pid not in self.known:
                        self.known[child.pid] = child
                        frontier.append(child.pid)
        if scan_environment:
            for proc in find_by_key(self.key, self.since):
                self.known.setdefault(proc.pid, proc)
        alive = []
        for pid, proc in list(self.known.items()):
            try:
                if not proc.is_running():
                    del self.known[pid]
                elif proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.NoSuchProcess:
                del self.known[pid]
            except psutil.Error:
                continue
        return alive

    def _learn_descendants(self) -> bool:
        """Add the descendants of known processes, read from their children lists.

        False when the kernel does not list children (the caller walks the
        process table instead). A pid is taken as a child only while its
        parent is the known process it was listed under, so a pid reused
        between the read and the check is not adopted.
        """
        frontier = list(self.known.items())
        while frontier:
            parent_pid, parent = frontier.pop()
            children = _children_from_proc(parent_pid)
            if children is None:
                try:
                    if parent.is_running():
                        return False
                except psutil.Error:
                    pass
                continue  # it ended: nothing listed
            for pid in children:
                if pid in self.known:
                    continue
                try:
                    child = psutil.Process(pid)
                    if child.ppid() != parent_pid:
                        continue
                except psutil.Error:
                    continue
                self.known[pid] = child
                frontier.append((pid, child))
        return True

    # --- signalling: the known tree at once, the process table after ---------
    #
    # Each signal has a fast part (killpg, then the members already known)
    # and a slow one, the sweep (a walk of the process table, reading every
    # process's environment, for escapees): tens of milliseconds on a busy
    # machine. With `defer_sweeps` set, the sweep waits until `sweep()` is
    # called, so the caller can record what it did in between; any later
    # call on the tree runs pending sweeps first, so a resume never overtakes
    # the sweep of its pause.

    def sweep(self) -> None:
        """Run the walks deferred by the last signals, oldest first."""
        with self._lock:
            self._run_sweeps()

    def _run_sweeps(self) -> None:
        while self._sweeps:
            self._sweeps.pop(0)()

    def _then(self, walk: Callable[[], object]) -> None:
        self._sweeps.append(walk)
        if not self.defer_sweeps:
            self._run_sweeps()

    def signal(self, sig: int, *, scan_environment: bool = False) -> int:
        """Send `sig` to the group and to every known or found member (walk included).

        Returns how many individual processes were signalled besides the group.
        """
        with self._lock:
            self._run_sweeps()
            grouped, signalled = self._signal_known(sig)
            return len(signalled) + self._signal_walk(sig, scan_environment, grouped, signalled)

    def _signal_known(self, sig: int) -> tuple[bool, set[int]]:
        """killpg, then the known members that left the group: no walk of the table."""
        grouped = self._group_is_ours()
        if grouped:
            try:
                os.killpg(self.pgid, sig)
            except ProcessLookupError:
                pass
            except PermissionError:
                logger.warning("killpg refused pgid=%s sig=%s", self.pgid, sig)
        # The children lists are cheap: a member that left the group since the
        # last walk is reached now, not after the sweep.
        self._learn_descendants()
        signalled = set()
        for pid, proc in list(self.known.items()):
            try:
                if grouped and os.getpgid(pid) == self.pgid:
                    continue  # killpg reached it
                proc.send_signal(sig)
                signalled.add(pid)
            except (psutil.Error, ProcessLookupError):
                pass
        return grouped, signalled

    def _signal_walk(
        self, sig: int, scan_environment: bool, grouped: bool, signalled: set[int]
    ) -> int:
        """Signal what a walk of the process table finds that the fast part did not reach."""
        count = 0
        for proc in self._refresh(scan_environment):
            if proc.pid in signalled:
                continue
            try:
                if grouped and os.getpgid(proc.pid) == self.pgid:
                    # killpg reached it: a second SIGTERM would read as "forced"
                    # to a child that (like this worker) escalates on the second.
                    continue
                proc.send_signal(sig)
                count += 1
            except (psutil.Error, ProcessLookupError):
                pass
        return count

    def _fast_then_walk(self, sig: int, *, scan_environment: bool) -> None:
        with self._lock:
            self._run_sweeps()
            grouped, signalled = self._signal_known(sig)
            self._then(lambda: self._signal_walk(sig, scan_environment, grouped, signalled))

    def stop(self) -> None:
        """SIGSTOP everything, repeating until no member is left running.

        A process forked between the group signal and the walk would escape a
        single pass; a few passes settle it.
        """
        self._fast_then_walk(signal.SIGSTOP, scan_environment=False)
        with self._lock:
            self._then(self._stop_stragglers)

    def _stop_stragglers(self) -> None:
        # The environment is read once (a double-forked escapee is found only by
        # its key); later passes follow parents, which is enough for what a
        # process forked just before it was stopped.
        for attempt in range(5):
            running = [p for p in self._refresh(attempt == 0) if not _is_stopped(p)]
            if not running:
                return
            for proc in running:
                try:
                    proc.send_signal(signal.SIGSTOP)
                except psutil.Error:
                    pass

    def cont(self) -> None:
        # Whatever the pause found by its key is known now: no environment scan.
        self._fast_then_walk(signal.SIGCONT, scan_environment=False)

    def terminate(self) -> None:
        """SIGTERM, then SIGCONT so stopped processes get to handle it."""
        with self._lock:
            self._run_sweeps()
            grouped, termed = self._signal_known(signal.SIGTERM)
            _, conted = self._signal_known(signal.SIGCONT)

            def walk() -> None:
                self._signal_walk(signal.SIGTERM, True, grouped, termed)
                self._signal_walk(signal.SIGCONT, False, grouped, conted)

            self._then(walk)

    def kill(self) -> None:
        self._fast_then_walk(signal.SIGKILL, scan_environment=True)

    def alive(self) -> list[psutil.Process]:
        return self.refresh(scan_environment=True)

    def sample(self) -> tuple[float, int]:
        """CPU percent and resident memory of the whole tree right now."""
        cpu, rss = 0.0, 0
        for proc in self.refresh():
            try:
                with proc.oneshot():
                    cpu += proc.cpu_percent(None)
                    rss += proc.memory_info().rss
            except psutil.Error:
                continue
        return cpu, rss


def _is_stopped(proc: psutil.Process) -> bool:
    try:
        return proc.status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
    except psutil.Error:
        return True  # gone: nothing to stop
