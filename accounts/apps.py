from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Teams and API keys"

    def ready(self) -> None:
        from accounts import checks, signals  # noqa: F401  (registers the system checks, connects cache invalidation)
        from accounts.limits import forget_counters
        from accounts.models import ApiKey

        # Changed limits start from the database's counters (accounts/limits.py).
        post_save.connect(forget_counters, sender=ApiKey, dispatch_uid="accounts.limits.forget_counters")
        post_delete.connect(forget_counters, sender=ApiKey, dispatch_uid="accounts.limits.forget_counters.delete")
