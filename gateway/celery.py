"""The Celery app: periodic jobs and background work.

Without ``REDIS_URL`` tasks run eagerly in-process (``CELERY_TASK_ALWAYS_EAGER``), so the
embedded default needs no broker and no worker.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")

app = Celery("clirelay")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
