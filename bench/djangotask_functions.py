"""Django `@task` functions the Django-task benchmark enqueues (bench/djangotasks.py)."""

from django.tasks import task


@task
def first_line():
    print("first line", flush=True)


@task
def instant(n):
    return n
