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


def find_by_key(key: str) -> list[psutil.Process]:
    """Processes whose environment carries this run's key (zombies excluded)."""
    if not key:
        return []
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        if _has_key(proc, key):
            found.append(proc)
    return found


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
        # Processes seen once as part of the run; psutil objects keep identity.
        self.known: dict[int, psutil.Process] = {}
        # The worker walks a tree from more than one thread (pausing, sampling).
        self._lock = threading.RLock()
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
            return self._refresh(scan_environment)

    def _refresh(self, scan_environment: bool) -> list[psutil.Process]:
        """Find the run's live processes now, and remember them.

        One pass over the process table finds every descendant of a known
        process (however it left the group); zombies stay known, since an
        unreaped leader still holds the group id, but are not returned.
        """
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
            for proc in find_by_key(self.key):
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

    def signal(self, sig: int, *, scan_environment: bool = False) -> int:
        """Send `sig` to the group and to every known or found member.

        Returns how many individual processes were signalled besides the group.
        """
        with self._lock:
            return self._signal(sig, scan_environment)

    def _signal(self, sig: int, scan_environment: bool) -> int:
        grouped = self._group_is_ours()
        if grouped:
            try:
                os.killpg(self.pgid, sig)
            except ProcessLookupError:
                pass
            except PermissionError:
                logger.warning("killpg refused pgid=%s sig=%s", self.pgid, sig)
        count = 0
        # Known members that left the group first: the walk of the process
        # table below takes tens of milliseconds on a busy machine.
        signalled = set()
        for pid, proc in list(self.known.items()):
            try:
                if grouped and os.getpgid(pid) == self.pgid:
                    continue  # killpg reached it
                proc.send_signal(sig)
                count += 1
                signalled.add(pid)
            except (psutil.Error, ProcessLookupError):
                pass
        for proc in self.refresh(scan_environment=scan_environment):
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

    def stop(self) -> None:
        """SIGSTOP everything, repeating until no member is left running.

        A process forked between the group signal and the walk would escape a
        single pass; a few passes settle it.
        """
        self.signal(signal.SIGSTOP)
        for _ in range(5):
            running = [p for p in self.refresh(scan_environment=True) if not _is_stopped(p)]
            if not running:
                return
            for proc in running:
                try:
                    proc.send_signal(signal.SIGSTOP)
                except psutil.Error:
                    pass

    def cont(self) -> None:
        self.signal(signal.SIGCONT, scan_environment=True)

    def terminate(self) -> None:
        """SIGTERM, then SIGCONT so stopped processes get to handle it."""
        self.signal(signal.SIGTERM, scan_environment=True)
        self.signal(signal.SIGCONT)

    def kill(self) -> None:
        self.signal(signal.SIGKILL, scan_environment=True)

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
