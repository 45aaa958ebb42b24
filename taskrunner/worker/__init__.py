"""The worker: `manage.py taskrunner worker` supervises runs (see `supervisor`)."""

from taskrunner.worker.supervisor import Supervisor, run_worker

__all__ = ["Supervisor", "run_worker"]
