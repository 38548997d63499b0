"""What config.yaml keys mean to CliRelay: imported, ignored with a reason, or not supported.

A note starting with ``ignored:`` marks a key that is accepted but means nothing here (its job is
done elsewhere); any other note is a warning completing "<key> …". A nested mapping describes
the keys of a section. Keys found in no table are reported as unknown; none is fatal.
"""

from __future__ import annotations

from collections.abc import Mapping

Notes = Mapping[str, str | Mapping[str, str]]

TOP_LEVEL_KEYS = frozenset(
    {
        "api-keys",
        "api-key-entries",
        "proxy-pool",
        "gemini-api-key",
        "interactions-api-key",
        "claude-api-key",
        "codex-api-key",
        "vertex-api-key",
        "openai-compatibility",
        "routing",
        "proxy-url",
        "request-retry",
        "max-retry-interval",
        "max-retry-credentials",
        "transient-error-cooldown-seconds",
        "force-model-prefix",
        "disable-cooling",
        "passthrough-headers",
        "allow-unauthenticated",
        "streaming",
        "nonstream-keepalive-interval",
        "oauth-model-alias",
        "oauth-excluded-models",
        "payload",
        "request-log-storage",
    }
)

_ENVIRONMENT = "ignored: set {} in the environment"
_FILE_LOGS = "ignored: application logs go to stdout; CliRelay writes no log files"
_IDENTITY = "ignored: upstream identity headers are identity profiles, edited in the admin"
_NO_OBFUSCATION = "is not supported: CliRelay does not disguise or obfuscate requests"
_NOT_IMPLEMENTED = "is not supported by CliRelay"

TOP_LEVEL_NOTES: Notes = {
    "host": _ENVIRONMENT.format("HOST and PORT"),
    "port": _ENVIRONMENT.format("HOST and PORT"),
    "tls": "ignored: terminate TLS in a reverse proxy in front of CliRelay",
    "pprof": "ignored: profile the Python process with external tools",
    "remote-management": "ignored: CliRelay is managed in the Django admin",
    "auth-dir": "ignored: OAuth credentials live in the database; import credential files in the admin",
    "debug": _ENVIRONMENT.format("DEBUG"),
    "logging-to-file": _FILE_LOGS,
    "logs-max-total-size-mb": _FILE_LOGS,
    "error-logs-max-files": _FILE_LOGS,
    "request-log": "ignored: request bodies are kept as request-log-storage says",
    "usage-statistics-enabled": "ignored: always on in CliRelay",
    "commercial-mode": "ignored: CliRelay has no commercial mode",
    "auto-update": "ignored: upgrade CliRelay through your deployment",
    "redis": _ENVIRONMENT.format("REDIS_URL"),
    "cors-allow-origins": "ignored: the API is not offered to cross-origin browsers",
    "timezone": _ENVIRONMENT.format("TIME_ZONE"),
    "ws-auth": "ignored: not configurable in CliRelay",
    "oauth-clients": _ENVIRONMENT.format("CLIRELAY_<PROVIDER>_OAUTH_CLIENT_ID and _CLIENT_SECRET"),
    "claude-header-defaults": _IDENTITY,
    "codex-header-defaults": _IDENTITY,
    "kimi-header-defaults": _IDENTITY,
    "identity-fingerprint": _IDENTITY,
    "ampcode": "ignored: Amp settings are not imported; configure them in the admin",
    "auth-auto-refresh-workers": "ignored: OAuth tokens are refreshed by a background task",
    "save-cooldown-status": _NOT_IMPLEMENTED,
    "disable-claude-cloak-mode": _NOT_IMPLEMENTED,
    "bedrock-api-key": "is not supported: CliRelay has no Bedrock channels",
    "opencode-go-api-key": "is not supported: CliRelay has no OpenCode Go channels",
    "xai-api-key": "is not supported: CliRelay has no xAI channels",
    "quota-exceeded": {
        # R10: the reference reads these and never acts on them.
        "switch-project": "is not supported; add one credential per project instead",
        "switch-preview-model": "is not supported; add the preview model to a channel's models instead",
        "antigravity-credits": _NOT_IMPLEMENTED,
    },
    "claude-code": {"disable-cloaking-model-list": "ignored: CliRelay never disguises model lists"},
    "codex": {"identity-confuse": _NO_OBFUSCATION},
    "antigravity": {"sensitive-words": _NO_OBFUSCATION},
}

CLOAK_NOTES: Notes = {"sensitive-words": _NO_OBFUSCATION}

# Per-credential weights belong to weighted-round-robin, which CliRelay does not have (management §2.4).
CHANNEL_NOTES: Notes = {"weight": "is not supported: priority orders channels and weighs them inside groups"}

ROUTING_NOTES: Notes = {
    "session-affinity": "is not supported: CliRelay has no session affinity",
    "session-affinity-ttl": "is not supported: CliRelay has no session affinity",
}

GROUP_NOTES: Notes = {"channel-priorities": "is not supported; set priority on the channels instead"}
