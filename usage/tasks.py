"""Celery tasks over usage: thin wrappers around plain functions."""

from celery import shared_task

from usage import retention


@shared_task
def prune_request_bodies() -> int:
    """Delete request bodies past ``content-retention-days``; returns how many went."""
    return retention.prune_request_bodies()
