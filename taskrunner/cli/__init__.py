"""The `manage.py taskrunner` command line, split by concern.

- `parsing`: the argument parser and the text forms of options (K=V, param specs).
- `follow`: printing a run's output from the database, live, and the exit codes.
- `verbs`: one function per verb; the management command only dispatches.
"""
