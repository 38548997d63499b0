"""CliRelay: one managed endpoint in front of many AI upstreams."""

from gateway.celery import app as celery_app

__all__ = ["celery_app"]
