"""The fake upstreams' own tests use the shared fixtures, as any other test package would."""

from tests.fakes.fixtures import (  # noqa: F401
    claude_upstream,
    claude_upstream_server,
    gemini_cli_upstream,
    gemini_cli_upstream_server,
    gemini_upstream,
    gemini_upstream_server,
    openai_upstream,
    openai_upstream_server,
    responses_upstream,
    responses_upstream_server,
)
