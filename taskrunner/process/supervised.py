"""One child process under supervision, driven from an asyncio loop.

Started with an argv list (no shell) in a new session, so it leads its own
process group. Its stdout and stderr are read as bytes without blocking the
loop and cut into lines (`LineSplitter`); its stdin takes lines to write.
Exit is noticed through a pidfd the moment it happens, not when the pipes
close: a grandchild holding the pipes open must not hide the exit (asyncio's
`Process.wait()` would wait for the pipes, PITFALLS D-5).

This module imports nothing from Django.
"""

import asyncio
import errno
import logging
import os
import subprocess
import time
from collections.abc import Callable

from taskrunner.process.lines import Line, LineSplitter
from taskrunner.process.tree import ProcessTree, process_identity

logger = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
LineCallback = Callable[[str, list[Line]], None]


class SupervisedProcess:
    """A running child: its pipes, its process tree, and how it ended."""

    def __init__(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: str | None,
        key: str,
        on_lines: LineCallback,
        max_line_bytes: int = 64 * 1024,
        popen=None,
    ):
        self.argv = argv
        self.key = key
        self.on_lines = on_lines
        self.loop = asyncio.get_running_loop()
        # `popen`: a child already started elsewhere (a fork of the warm
        # process, `forked.ForkedPopen`) with the same pipes and `wait()`.
        self.popen = popen or subprocess.Popen(
            argv,
            env=env,
            cwd=cwd or None,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
        self.pid = self.popen.pid
        self.pgid = self.pid  # a session leader leads its own group
        self.create_time = process_identity(self.pid)
        self.tree = ProcessTree(self.pid, self.create_time, self.pgid, key)
        self.returncode: int | None = None
        self.exited = asyncio.Event()
        self.pipes_closed = asyncio.Event()
        self._open_pipes = 2
        self._splitters = {
            "stdout": LineSplitter(max_line_bytes),
            "stderr": LineSplitter(max_line_bytes),
        }
        assert self.popen.stdin and self.popen.stdout and self.popen.stderr  # all three are pipes
        self._fds = {
            "stdout": self.popen.stdout.fileno(),
            "stderr": self.popen.stderr.fileno(),
        }
        self._reading = {name: False for name in self._fds}
        self._paused_reading = False
        for name, fd in self._fds.items():
            os.set_blocking(fd, False)
            self._start_reading(name)
        self._stdin_fd: int | None = self.popen.stdin.fileno()
        os.set_blocking(self._stdin_fd, False)
        self._stdin_buffer = bytearray()
        self._stdin_writing = False
        self._watch_exit()

    # --- output -------------------------------------------------------------

    def _start_reading(self, name: str) -> None:
        if not self._reading[name] and self._fds.get(name) is not None:
            self.loop.add_reader(self._fds[name], self._on_readable, name)
            self._reading[name] = True

    def _stop_reading(self, name: str) -> None:
        if self._reading[name]:
            self.loop.remove_reader(self._fds[name])
            self._reading[name] = False

    def pause_reading(self) -> None:
        """Backpressure: leave the data in the pipe until `resume_reading()`."""
        self._paused_reading = True
        for name in self._fds:
            self._stop_reading(name)

    def resume_reading(self) -> None:
        self._paused_reading = False
        for name in list(self._fds):
            self._start_reading(name)

    def _on_readable(self, name: str) -> None:
        self._read_once(name)

    def _read_once(self, name: str) -> bool:
        """Read what a pipe has now and pass its lines on; False if nothing was there."""
        try:
            data = os.read(self._fds[name], READ_SIZE)
        except BlockingIOError:
            return False
        except OSError as exc:
            logger.warning("read failed pid=%s stream=%s error=%s", self.pid, name, exc)
            data = b""
        if data:
            lines = self._splitters[name].feed(data)
        else:
            self._close_pipe(name)
            lines = self._splitters[name].flush()
        if lines:
            self.on_lines(name, lines)
        return bool(data)

    def _close_pipe(self, name: str) -> None:
        self._stop_reading(name)
        fd = self._fds.pop(name)
        pipe = self.popen.stdout if name == "stdout" else self.popen.stderr
        if pipe is not None:
            pipe.close()
        del fd
        self._open_pipes -= 1
        if self._open_pipes == 0:
            self.pipes_closed.set()

    def close_pipes(self) -> None:
        """Stop reading for good (what is left unread is lost); used at the end."""
        for name in list(self._fds):
            self._close_pipe(name)

    def drain_pipes(self) -> None:
        """Read whatever is already in the pipes, without waiting for more."""
        for name in list(self._fds):
            for _ in range(10_000):
                if name not in self._fds or not self._read_once(name):
                    break

    # --- input --------------------------------------------------------------

    def write_line(self, text: str) -> bool:
        """Queue one line for the child's stdin; False if stdin is closed."""
        if self._stdin_fd is None:
            return False
        self._stdin_buffer += text.rstrip("\n").encode() + b"\n"
        self._flush_stdin()
        return True

    def _flush_stdin(self) -> None:
        if self._stdin_fd is None:
            return
        while self._stdin_buffer:
            try:
                written = os.write(self._stdin_fd, self._stdin_buffer)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.EBADF):
                    self._close_stdin()
                    return
                raise
            del self._stdin_buffer[:written]
        want = bool(self._stdin_buffer)
        if want and not self._stdin_writing:
            self.loop.add_writer(self._stdin_fd, self._flush_stdin)
            self._stdin_writing = True
        elif not want and self._stdin_writing:
            self.loop.remove_writer(self._stdin_fd)
            self._stdin_writing = False

    def _close_stdin(self) -> None:
        if self._stdin_fd is None:
            return
        if self._stdin_writing:
            self.loop.remove_writer(self._stdin_fd)
            self._stdin_writing = False
        self._stdin_buffer.clear()
        try:
            if self.popen.stdin is not None:
                self.popen.stdin.close()
        except OSError:
            pass
        self._stdin_fd = None

    # --- exit ---------------------------------------------------------------

    def _watch_exit(self) -> None:
        try:
            pidfd = os.pidfd_open(self.pid)
        except (OSError, AttributeError):
            self._exit_poller = self.loop.create_task(self._poll_exit())
            return
        self.loop.add_reader(pidfd, self._on_exit_ready, pidfd)

    def _on_exit_ready(self, pidfd: int) -> None:
        # The pidfd is readable once the process has exited. It stays a
        # zombie (so its pid and group id cannot be reused) until reaped.
        self.loop.remove_reader(pidfd)
        os.close(pidfd)
        self.exited.set()

    async def _poll_exit(self) -> None:
        while True:
            try:
                ended = bool(os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT))
            except ChildProcessError:
                ended = True  # already reaped
            if ended:
                self.exited.set()
                return
            await asyncio.sleep(0.02)

    def reap(self) -> int:
        """Collect the exit status of the exited leader (after cleaning up its tree)."""
        if self.returncode is None:
            self.returncode = self.popen.wait()
        self._close_stdin()
        return self.returncode

    # --- signals ------------------------------------------------------------

    def stop(self) -> None:
        self.tree.stop()

    def cont(self) -> None:
        self.tree.cont()

    def terminate(self) -> None:
        self.tree.terminate()

    def kill(self) -> None:
        self.tree.kill()

    async def finish(self, *, leftover_grace: float = 0.0) -> int:
        """After the leader exited: end what it left behind, drain, reap.

        A run owns its whole tree: descendants still alive when the task's
        main process exits are killed, so nothing outlives its run.
        """
        await self.exited.wait()
        leftovers = self.tree.alive()
        leftovers = [p for p in leftovers if p.pid != self.pid]
        if leftovers:
            if leftover_grace > 0:
                self.tree.terminate()
                deadline = time.monotonic() + leftover_grace
                while time.monotonic() < deadline and [
                    p for p in self.tree.alive() if p.pid != self.pid
                ]:
                    await asyncio.sleep(0.05)
            self.tree.kill()
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and [
                p for p in self.tree.alive() if p.pid != self.pid
            ]:
                await asyncio.sleep(0.02)
        # With every writer gone the pipes reach EOF; do not wait forever on a
        # process that hid from us (no key, no ancestry): 2 seconds of reading
        # (time with reading paused for backpressure does not count).
        waited = 0.0
        while not self.pipes_closed.is_set():
            if waited > 2.0:
                logger.warning("pipes still open after exit pid=%s; closing them", self.pid)
                self.drain_pipes()
                self.close_pipes()
                break
            try:
                await asyncio.wait_for(self.pipes_closed.wait(), timeout=0.05)
            except TimeoutError:
                if not self._paused_reading:
                    waited += 0.05
        return self.reap()
