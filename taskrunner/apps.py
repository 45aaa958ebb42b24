from django.apps import AppConfig


class TaskrunnerConfig(AppConfig):
    name = "taskrunner"
    verbose_name = "Task runner"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from taskrunner import artifacts, checks  # noqa: F401  (registers checks and signals)
