from django.apps import AppConfig


class ChannelsAppConfig(AppConfig):
    name = "channels_app"
    verbose_name = "Upstream channels"

    def ready(self) -> None:
        from channels_app import signals  # noqa: F401  (connects routing-table invalidation)
