"""Exit codes of `manage.py taskrunner` (documented in the README).

A followed run (`start --follow`, `logs --follow`) exits with a code per final
status, so a script can tell a failure from an abort without parsing text.
"""

from taskrunner.models import RunStatus

OK = 0
ERROR = 1  # bad input, unknown task/run/user, wrong state, database unreachable
USAGE = 2  # the command line itself is malformed (argparse's convention)
INTERRUPTED = 130  # Ctrl-C while following: the run itself goes on

BY_FINAL_STATUS: dict[str, int] = {
    RunStatus.SUCCEEDED: OK,
    RunStatus.FAILED: 3,
    RunStatus.ABORTED: 4,
    RunStatus.TIMED_OUT: 5,
    RunStatus.LOST: 6,
}


def for_status(status: str) -> int:
    return BY_FINAL_STATUS.get(status, ERROR)
