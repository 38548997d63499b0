"""URL map: the relay API at the root, the admin at /admin/."""

from django.contrib import admin
from django.urls import path, re_path

from gateway import namespaces
from gateway.api import api

admin.site.site_header = "CliRelay"
admin.site.site_title = "CliRelay"
admin.site.index_title = "Control panel"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", api.urls),
    re_path(namespaces.NAMESPACED.pattern, namespaces.dispatch, name="namespaced"),
]
