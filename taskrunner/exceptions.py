"""Exceptions that name how a supervised run ended, for Django's `TaskResult.errors`.

A Django task whose run ends other than by the function raising is reported
by `SupervisedBackend.get_result` as FAILED with one of these as the last
error's `exception_class_path`. They are never raised inside the function:
the function's process is stopped from outside (SIGTERM, then SIGKILL).
"""


class RunEnded(Exception):
    """Base class: the run ended without the function returning."""


class RunAborted(RunEnded):
    """Somebody aborted the run (page, API, command line), or its worker stopped."""


class RunTimedOut(RunEnded):
    """The run ran longer than its task's timeout (paused time not counted)."""


class RunLost(RunEnded):
    """The worker that supervised the run died; the run could not be completed."""


class RunFailed(RunEnded):
    """The process failed without reporting an exception (a crash, a signal, a bad start)."""
