"""Children forked by a warm process (a "zygote") instead of started cold.

The worker keeps one warm process (`taskrunner.zygote`) that has paid the
start-up cost once; a run's child is a fork of it. The worker still owns the
run exactly as it owns a cold child:

- It makes the three pipes itself and passes the child's ends to the warm
  process over a Unix socket (SCM_RIGHTS); the fork dup2()s them onto 0/1/2
  and calls setsid(), so the child leads its own session and process group.
- The warm process answers with the child's pid and keeps it unreaped (a
  zombie at worst, so the pid cannot be reused) until the worker has taken
  its identity (create time) and opened a pidfd on it (pidfd_open works on
  any pid, not only a child's); only then does the worker say "watch", and
  the warm process reaps it when it exits and sends its exit status back.
- Exit is seen through the pidfd, as for a cold child; the exit status comes
  from the warm process. If the warm process is gone, the status is unknown
  and reported as 255.
- The warm process is lost when it exits (seen at once through its own pidfd,
  or as the end of its socket), or when it fails to answer a fork or take a
  message. A lost one is killed if it still runs and reaped, and its owner is
  told (`on_lost`) so it can start another.

Pause, resume, abort and the tree walk act on the child's pid and group as
for any run. One difference: a forked child's /proc/PID/environ is the warm
process's initial environment (os.environ set after a fork is not exec'd),
so the environment-key scan finds its exec'd descendants, not the child
itself: the child is found as the run's leader (pid + create time) and its
descendants by ancestry and group.

This module imports nothing from Django.
"""

import asyncio
import json
import logging
import os
import select
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

from taskrunner.process.supervised import SupervisedProcess

logger = logging.getLogger(__name__)

MESSAGE_BYTES = 1024 * 1024
FORK_ANSWER_SECONDS = 5.0
EXIT_REPORT_SECONDS = 5.0
UNKNOWN_EXIT = 255


class ZygoteUnavailable(OSError):
    """The warm process is not there (not ready, dead, or not answering): start cold."""


def send_message(sock: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def receive_message(sock: socket.socket, max_fds: int = 0) -> tuple[dict | None, list[int]]:
    """One message (None at EOF) and the descriptors it carried."""
    data, fds, _flags, _addr = socket.recv_fds(sock, MESSAGE_BYTES, max_fds)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(data), fds


class ForkedPopen:
    """What `SupervisedProcess` uses of a Popen, for a child the warm process forked."""

    def __init__(self, pid: int, stdin_fd: int, stdout_fd: int, stderr_fd: int):
        self.pid = pid
        self.stdin = os.fdopen(stdin_fd, "wb", buffering=0)
        self.stdout = os.fdopen(stdout_fd, "rb", buffering=0)
        self.stderr = os.fdopen(stderr_fd, "rb", buffering=0)
        self.returncode: int | None = None
        self.reported = asyncio.Event()

    def report_exit(self, returncode: int) -> None:
        self.returncode = returncode
        self.reported.set()

    def wait(self) -> int:
        return UNKNOWN_EXIT if self.returncode is None else self.returncode


class Zygote:
    """The worker's side of its warm process: start it, ask it to fork, hear of exits."""

    def __init__(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: str | None,
        on_ready: Callable[["Zygote"], None] | None = None,
        on_lost: Callable[["Zygote"], None] | None = None,
    ):
        self.loop = asyncio.get_running_loop()
        self.on_ready = on_ready
        self.on_lost = on_lost
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [*argv, str(theirs.fileno())],
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                pass_fds=[theirs.fileno()],
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        try:
            # Its exit, seen at once even if something else still holds its socket.
            self.pidfd: int | None = os.pidfd_open(self.proc.pid)
        except OSError:
            ours.close()  # EOF: it exits
            self.proc.kill()
            self.proc.wait()
            raise
        self.sock = ours
        self.sock.setblocking(False)
        self.ready = False
        self.ready_at: float | None = None  # loop.time() when it said it was ready
        self.lost = False
        self.children: dict[int, ForkedPopen] = {}
        self.loop.add_reader(self.sock, self._on_readable)
        self.loop.add_reader(self.pidfd, self._on_exit)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def available(self) -> bool:
        return self.ready and not self.lost

    def _on_readable(self) -> None:
        while not self.lost:
            try:
                message, fds = receive_message(self.sock)
            except BlockingIOError:
                return
            except OSError as exc:
                self._lose(f"read failed: {exc}")
                return
            if message is None:
                self._lose("it exited")
                return
            self._dispatch(message)

    def _on_exit(self) -> None:
        """Its pidfd is readable: it has exited. Reap it."""
        self._forget_pidfd()
        returncode = self.proc.poll()
        if self.lost:  # its socket's end came first: say how it ended
            logger.info("warm process exited pid=%s returncode=%s", self.proc.pid, returncode)
        else:
            self._lose(f"it exited returncode={returncode}")

    def _forget_pidfd(self) -> None:
        if self.pidfd is not None:
            self.loop.remove_reader(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None

    def _dispatch(self, message: dict) -> Any:
        if "ready" in message:
            self.ready = True
            self.ready_at = self.loop.time()
            logger.info("warm process ready pid=%s seconds=%s", self.proc.pid, message["ready"])
            if self.on_ready is not None:
                self.on_ready(self)
        elif "exit" in message:
            child = self.children.pop(message["exit"], None)
            if child is not None:
                child.report_exit(message["returncode"])
        return message

    def _lose(self, why: str) -> None:
        """It can no longer fork: later runs start cold; one that still runs is killed."""
        if self.lost:
            return
        self.lost = True
        logger.warning("warm process lost pid=%s why=%s; starting cold", self.proc.pid, why)
        self.loop.remove_reader(self.sock)
        self.sock.close()
        for child in self.children.values():
            child.reported.set()  # the status is unknown now
        self.children.clear()
        if self.proc.returncode is None:
            # Hung, or its socket broken: of no more use. Not yet reaped (its
            # pidfd reader does that), so the pid is still its own.
            self.proc.kill()
        if self.proc.returncode is not None:
            self._on_exit()  # reaped already (by kill's own poll): say how it ended
        if self.on_lost is not None:
            self.on_lost(self)

    def fork(self, request: dict) -> ForkedPopen:
        """Ask for a forked child; ZygoteUnavailable if the warm process cannot give one."""
        if not self.available:
            raise ZygoteUnavailable("the warm process is not ready")
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        theirs, ours = [stdin_r, stdout_w, stderr_w], [stdin_w, stdout_r, stderr_r]
        try:
            try:
                send_message(self.sock, {"fork": request}, theirs)
            except OSError as exc:
                self._lose(f"write failed: {exc}")
                raise ZygoteUnavailable(str(exc)) from exc
            pid = self._await_forked()
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in theirs:  # the warm process has its own copies now
                os.close(fd)
        popen = ForkedPopen(pid, *ours)
        self.children[pid] = popen
        return popen

    def _await_forked(self) -> int:
        """Wait (briefly, blocking) for the answer to a fork; other messages are handled."""
        deadline = time.monotonic() + FORK_ANSWER_SECONDS
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._lose("no answer to a fork")
                raise ZygoteUnavailable("the warm process did not answer")
            readable, _, _ = select.select([self.sock], [], [], left)
            if not readable:
                continue
            try:
                message, _fds = receive_message(self.sock)
            except BlockingIOError:
                continue
            except OSError as exc:
                self._lose(f"read failed: {exc}")
                raise ZygoteUnavailable(str(exc)) from exc
            if message is None:
                self._lose("it exited")
                raise ZygoteUnavailable("the warm process exited")
            if "forked" in message:
                return int(message["forked"])
            if "fork_failed" in message:
                raise OSError(message["fork_failed"])
            self._dispatch(message)

    def watch(self, pid: int) -> None:
        """The worker holds the child's identity and pidfd: it may be reaped once it exits."""
        try:
            send_message(self.sock, {"watch": pid})
        except OSError as exc:
            self._lose(f"write failed: {exc}")

    def close(self, timeout: float = 5.0) -> None:
        """End the warm process (its forked runs are the worker's to end, not its)."""
        if not self.lost:
            self.lost = True
            self.loop.remove_reader(self.sock)
            self.sock.close()  # EOF: the warm process exits
        self._forget_pidfd()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class ForkedProcess(SupervisedProcess):
    """A supervised child forked by the warm process; supervised as any other."""

    def __init__(self, argv: list[str], *, zygote: Zygote, request: dict, **kwargs):
        popen = zygote.fork(request)
        super().__init__(argv, env={}, cwd=None, popen=popen, **kwargs)
        self.forked_popen = popen
        # Identity taken and pidfd open: the warm process may reap it now.
        zygote.watch(popen.pid)
        self.forked = True

    async def finish(self, *, leftover_grace: float = 0.0) -> int:
        await self.exited.wait()
        try:
            await asyncio.wait_for(self.forked_popen.reported.wait(), EXIT_REPORT_SECONDS)
        except TimeoutError:
            logger.warning("no exit status from the warm process pid=%s", self.pid)
        return await super().finish(leftover_grace=leftover_grace)
