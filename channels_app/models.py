"""Upstream credentials (channels), the proxy pool, model prices and runtime settings."""

from __future__ import annotations

import fnmatch
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Lower

from gateway.encryption import EncryptedTextField, mask


class ProviderKind(models.TextChoices):
    """Every upstream CliRelay can speak to. The value is the name used in config.yaml."""

    OPENAI_COMPATIBILITY = "openai-compatibility", "OpenAI-compatible (API key)"
    GEMINI_API_KEY = "gemini-api-key", "Gemini (API key)"
    INTERACTIONS_API_KEY = "interactions-api-key", "Gemini Interactions (API key)"
    VERTEX_API_KEY = "vertex-api-key", "Vertex-compatible (API key)"
    VERTEX = "vertex", "Vertex AI (service account)"
    AISTUDIO = "aistudio", "AI Studio relay"
    GEMINI_CLI = "gemini-cli", "Gemini CLI (OAuth)"
    CLAUDE_API_KEY = "claude-api-key", "Claude (API key)"
    CLAUDE = "claude", "Claude Code (OAuth)"
    CODEX_API_KEY = "codex-api-key", "Codex (API key)"
    CODEX = "codex", "Codex (ChatGPT OAuth)"
    QWEN = "qwen", "Qwen Code (OAuth)"
    IFLOW = "iflow", "iFlow (OAuth)"
    KIMI = "kimi", "Kimi (OAuth)"
    ANTIGRAVITY = "antigravity", "Antigravity (OAuth)"


DEFAULT_BASE_URLS: dict[str, str] = {
    ProviderKind.GEMINI_API_KEY: "https://generativelanguage.googleapis.com",
    ProviderKind.INTERACTIONS_API_KEY: "https://generativelanguage.googleapis.com",
    ProviderKind.VERTEX_API_KEY: "https://aiplatform.googleapis.com",
    ProviderKind.CLAUDE_API_KEY: "https://api.anthropic.com",
    ProviderKind.CLAUDE: "https://api.anthropic.com",
    ProviderKind.CODEX_API_KEY: "https://chatgpt.com/backend-api/codex",
    ProviderKind.CODEX: "https://chatgpt.com/backend-api/codex",
    ProviderKind.GEMINI_CLI: "https://cloudcode-pa.googleapis.com",
    ProviderKind.ANTIGRAVITY: "https://cloudcode-pa.googleapis.com",
    ProviderKind.QWEN: "https://portal.qwen.ai/v1",
    ProviderKind.IFLOW: "https://apis.iflow.cn/v1",
    ProviderKind.KIMI: "https://api.kimi.com/coding/v1",
}


def wildcard_match(pattern: str, value: str) -> bool:
    """Case-insensitive match where ``*`` stands for any run of characters."""
    pattern, value = pattern.lower(), value.lower()
    if "*" not in pattern:
        return pattern == value
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]").replace("?", "[?]"))


def validate_model_entries(value: Any) -> None:
    if not isinstance(value, list) or not all(
        isinstance(item, dict) and isinstance(item.get("name"), str) and item["name"].strip() for item in value
    ):
        raise ValidationError('Models must be a list of {"name": "<upstream model>", "alias": "<client name>"}.')


def validate_http_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("Enter an http:// or https:// URL with a host.")


def validate_string_list(value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValidationError("Must be a list of strings.")


def validate_headers(value: Any) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValidationError("Headers must be an object of header name to string value.")


class ProxyEntry(models.Model):
    """An outbound proxy in the shared pool; channels may point at one."""

    name = models.CharField(max_length=100, unique=True)
    url = EncryptedTextField(help_text="http://, https:// or socks5:// URL; may carry user:password.")
    enabled = models.BooleanField(default=True)
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "proxy"
        verbose_name_plural = "proxy pool"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        validate_proxy_url(self.url)


def validate_proxy_url(url: str) -> None:
    if url and url not in ("direct", "none") and not url.startswith(("http://", "https://", "socks5://")):
        raise ValidationError("Proxy URL must start with http://, https:// or socks5:// (or be direct / none).")


class Channel(models.Model):
    """One upstream credential: what CliRelay forwards requests to."""

    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="channels")
    kind = models.CharField(max_length=32, choices=ProviderKind.choices)
    name = models.CharField(max_length=100)
    notes = models.TextField(blank=True)
    base_url = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_http_url],
        help_text="Empty: the provider's default endpoint. Any http(s) URL, e.g. http://ollama:11434/v1.",
    )
    secret = EncryptedTextField(blank=True, help_text="API key or token, encrypted at rest.")
    headers = models.JSONField(default=dict, blank=True, validators=[validate_headers])
    served_models = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_model_entries],
        help_text='[{"name": "upstream-model", "alias": "client-name"}]; the alias is what clients send.',
    )
    excluded_models = models.JSONField(
        default=list, blank=True, validators=[validate_string_list], help_text='Patterns such as "gemini-2.5-*".'
    )
    prefix = models.CharField(
        max_length=64, blank=True, help_text="Clients reach this channel's models as prefix/model-name."
    )
    enabled = models.BooleanField(default=True)
    shared = models.BooleanField(
        default=False,
        help_text="Serve the keys of every team, not only this one's (only superusers set this). Other teams "
        "never see the channel in the admin; their groups take it in by prefix or name match rules.",
    )
    priority = models.IntegerField(
        default=0,
        help_text="Higher tiers are tried first. Inside a group (a /group/v1 URL or a key limited to groups) "
        "it is the channel's weight in the smooth weighted round-robin; 0 weighs 1, below 0 excludes.",
    )
    groups = models.ManyToManyField("accounts.ChannelGroup", blank=True, related_name="channels")
    proxy = models.ForeignKey(ProxyEntry, null=True, blank=True, on_delete=models.SET_NULL, related_name="channels")
    proxy_url = EncryptedTextField(blank=True, help_text="Per-channel proxy; direct or none ignores the global one.")
    options = models.JSONField(
        default=dict, blank=True, help_text="Provider-specific settings (cloak, websockets, thinking, …)."
    )
    success_count = models.PositiveBigIntegerField(default=0, editable=False)
    failure_count = models.PositiveBigIntegerField(default=0, editable=False)
    latency_ewma_ms = models.FloatField(default=0, editable=False, help_text="Total latency, EWMA (0 = no data)")
    ttfb_ewma_ms = models.FloatField(default=0, editable=False, help_text="First-byte latency, EWMA (0 = no data)")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["team", "-priority", "name"]
        constraints = [
            models.UniqueConstraint("team", Lower("name"), name="unique_channel_name_per_team"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    def clean(self) -> None:
        if self.prefix and "/" in self.prefix:
            raise ValidationError({"prefix": "A prefix is one path segment: no '/'."})
        validate_proxy_url(self.proxy_url)

    @property
    def masked_secret(self) -> str:
        return mask(self.secret)

    @property
    def effective_base_url(self) -> str:
        return (self.base_url or DEFAULT_BASE_URLS.get(self.kind, "")).rstrip("/")

    def model_routes(self) -> list[tuple[str, str]]:
        """(client-visible name, upstream name) pairs this channel serves, exclusions applied.

        An alias hides the upstream name unless the entry says ``fork: true``, which keeps both.
        """
        pairs: list[tuple[str, str]] = []
        for entry in self.served_models:
            upstream = entry["name"].strip()
            visible = (entry.get("alias") or "").strip() or upstream
            if any(wildcard_match(p, upstream) or wildcard_match(p, visible) for p in self.excluded_models):
                continue
            if entry.get("fork") and visible != upstream:
                pairs.append((upstream, upstream))
            pairs.append((visible, upstream))
        return pairs


class ChannelKey(models.Model):
    """An extra credential of a channel (``api-key-entries`` of an OpenAI-compatible provider)."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="extra_keys")
    secret = EncryptedTextField()
    proxy_url = EncryptedTextField(blank=True)
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["channel", "id"]
        verbose_name = "extra key"

    def __str__(self) -> str:
        return mask(self.secret)


class ModelPrice(models.Model):
    """USD price per million tokens for the models whose name matches ``model``."""

    model = models.CharField(max_length=200, unique=True, help_text='Exact name or pattern such as "gpt-5*".')
    input_per_million = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    output_per_million = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    cached_per_million = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True, help_text="Empty: cached input costs the input price."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model"]

    def __str__(self) -> str:
        return self.model


class RuntimeSettings(models.Model):
    """Global routing and retry settings (one row), imported from config.yaml or edited here."""

    class Strategy(models.TextChoices):
        ROUND_ROBIN = "round-robin", "Round robin"
        FILL_FIRST = "fill-first", "Fill first"

    proxy_url = EncryptedTextField(blank=True, help_text="Global upstream proxy.")
    request_retry = models.PositiveIntegerField(default=3)
    max_retry_interval = models.PositiveIntegerField(default=30, help_text="Seconds")
    max_retry_credentials = models.PositiveIntegerField(
        default=0, help_text="Most credentials one request tries before it fails (0 = unlimited)."
    )
    routing_strategy = models.CharField(max_length=20, choices=Strategy.choices, default=Strategy.ROUND_ROBIN)
    include_default_group = models.BooleanField(default=True)
    force_model_prefix = models.BooleanField(default=False)
    disable_cooling = models.BooleanField(default=False)
    transient_error_cooldown_seconds = models.IntegerField(
        default=0, help_text="Cool-down after 408/5xx upstream errors: 0 = 60 s, -1 = none."
    )
    streaming_keepalive_seconds = models.PositiveIntegerField(
        default=0, help_text="Seconds of upstream silence before a keep-alive goes to a streaming client (0 = off)."
    )
    streaming_bootstrap_retries = models.PositiveIntegerField(
        default=0,
        help_text="Streams per request that may still fail over after a 2xx whose first event is an error "
        "(the client has seen nothing yet). 0 = off: the stream is the client's as soon as the upstream answers.",
    )
    oauth_model_alias = models.JSONField(default=dict, blank=True)
    oauth_excluded_models = models.JSONField(default=dict, blank=True)
    payload_rules = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "runtime settings"
        verbose_name_plural = "runtime settings"

    def __str__(self) -> str:
        return "Runtime settings"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.pk = 1
        super().save(*args, **kwargs)

    @classmethod
    def load(cls) -> RuntimeSettings:
        """The row, or the defaults when none has been saved (reading never writes)."""
        return cls.objects.filter(pk=1).first() or cls(pk=1)
