"""The site's own pages beside the task runner's: the demo Django task's button."""

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from backoffice.tasks import sales_report


@require_POST
@staff_member_required
def enqueue_sales_report(request: HttpRequest) -> HttpResponse:
    """Enqueue the demo report through Django's Tasks framework, then show its run."""
    if not request.user.has_perm("taskrunner.start_run"):
        raise PermissionDenied("You may not start runs.")
    result = sales_report.enqueue()
    messages.success(request, f"The sales report was enqueued as run {result.id}.")
    return redirect(reverse("taskrunner:run", args=[int(result.id)]))
