from django.contrib import admin
from django.urls import include, path

from backoffice import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("taskrunner.api.urls")),
    path("reports/sales/enqueue/", views.enqueue_sales_report, name="enqueue-sales-report"),
    path("", include("taskrunner.urls")),
]
