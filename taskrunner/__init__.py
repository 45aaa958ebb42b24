"""A reusable Django app that runs long tasks as supervised child processes.

Import `taskrunner.child` inside a task's own program to report progress,
a result or structured messages; nothing else here is needed by children.
"""
