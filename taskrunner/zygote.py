"""The warm process a worker forks Django tasks' children from: `python -m taskrunner.zygote FD`.

It sets Django up once (about half a second on a small machine), closes
every database connection, says it is ready, then forks a child for each
request on the socket FD (the protocol and the worker's side are in
`taskrunner.process.forked`). It never touches the database between forks,
so a child never inherits a connection; each child still drops any it finds
without closing it (closing would send a Terminate over a socket the parent
shares). It imports a task's module before forking the first child of it,
so the next child of that module starts with it loaded.

A child: setsid() (its own session and process group), the run's pipes on
0/1/2, every other inherited descriptor closed, default signal handlers, the
run's environment and working directory, then the function runs as in a cold
start (`taskrunner.djangotask.run_function`) and the child exits with its
status.

The warm process ignores SIGINT (Ctrl-C in the worker's terminal is the
worker's to handle) and exits when the worker closes the socket. It reaps
each child only once the worker has said "watch" (the worker holds its
identity and pidfd), then sends back the exit status.
"""

import importlib
import logging
import os
import select
import signal
import sys
import time
import traceback

from taskrunner.process.forked import receive_message, send_message

logger = logging.getLogger("taskrunner.zygote")


class WarmProcess:
    def __init__(self, sock):
        self.sock = sock
        self.pidfds: dict[int, int] = {}  # fd -> pid, for each unreaped child
        self.watched: set[int] = set()
        self.exited: set[int] = set()
        self.imported: set[str] = set()

    def serve(self) -> None:
        while True:
            readable, _, _ = select.select([self.sock, *self.pidfds], [], [])
            for fd in readable:
                if fd is self.sock:
                    if not self._on_request():
                        return
                else:
                    pid = self.pidfds.pop(fd)
                    os.close(fd)
                    self.exited.add(pid)
                    self._reap_if_watched(pid)

    def _on_request(self) -> bool:
        message, fds = receive_message(self.sock, max_fds=3)
        if message is None:
            return False
        if "watch" in message:
            pid = int(message["watch"])
            self.watched.add(pid)
            self._reap_if_watched(pid)
        elif "fork" in message:
            try:
                pid = self._fork(message["fork"], fds)
            except OSError as exc:
                send_message(self.sock, {"fork_failed": str(exc)})
            else:
                send_message(self.sock, {"forked": pid})
            finally:
                for fd in fds:
                    os.close(fd)
        return True

    def _reap_if_watched(self, pid: int) -> None:
        if pid in self.watched and pid in self.exited:
            self.watched.discard(pid)
            self.exited.discard(pid)
            _, status = os.waitpid(pid, 0)
            send_message(self.sock, {"exit": pid, "returncode": os.waitstatus_to_exitcode(status)})

    def _preload(self, module_path: str) -> None:
        """Import the function's module here once, so later children have it loaded."""
        from django.db import connections

        module = module_path.rpartition(".")[0]
        if not module or module in self.imported:
            return
        self.imported.add(module)
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - the child imports it again and reports the error
            logger.debug("preloading failed module=%s", module, exc_info=True)
        connections.close_all()  # an import may have queried; never fork with a connection

    def _fork(self, request: dict, fds: list[int]) -> int:
        if len(fds) != 3:
            raise OSError(f"a fork needs 3 descriptors, got {len(fds)}")
        self._preload(request["module_path"])
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            run_child(request, fds)  # never returns
        self.pidfds[os.pidfd_open(pid)] = pid
        return pid


def run_child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the run's process, run the function, exit."""
    code = 1
    try:
        os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.closerange(3, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _drop_connections()
        os.environ.clear()
        os.environ.update(request["env"])
        if request.get("cwd"):
            os.chdir(request["cwd"])
        sys.argv = ["taskrunner.djangotask", request["module_path"]]
        from taskrunner.djangotask import run_function

        code = run_function(request["module_path"])
    except BaseException:  # noqa: BLE001 - anything here is the run's failure, in its log
        traceback.print_exc()
        code = 1
    finally:
        try:
            from django.db import connections

            connections.close_all()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _drop_connections() -> None:
    """Forget any database connection inherited from the warm process, without closing it.

    Closing would talk to the server over a socket the parent also holds. The
    warm process never holds one when it forks; this is the belt to those braces.
    """
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        conn.connection = None
        conn.closed_in_transaction = False
        conn.in_atomic_block = False
        conn.savepoint_ids = []
        conn.needs_rollback = False
        conn.run_on_commit = []


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    import socket

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[0]))
    began = time.monotonic()
    import django

    django.setup()
    from django.db import connections

    from taskrunner.djangotask import install_log_handler

    install_log_handler()
    connections.close_all()
    send_message(sock, {"ready": round(time.monotonic() - began, 3)})
    try:
        WarmProcess(sock).serve()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the worker went away
    return 0


if __name__ == "__main__":
    sys.exit(main())
