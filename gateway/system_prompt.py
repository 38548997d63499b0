"""A key's system prompt, put in front of whatever system text a client request already carries.

Pure (no Django, no I/O). Each client family keeps system text in its own place: OpenAI Chat a
leading ``system`` message, the Responses API ``instructions``, Anthropic ``system`` (a string or
text blocks), Gemini ``systemInstruction.parts``. The key's prompt comes first, the client's own
follows; the client's body is not changed (a copy is returned).
"""

from __future__ import annotations

from typing import Any


def inject(family: str, payload: dict[str, Any], prompt: str) -> dict[str, Any]:
    """``payload`` with ``prompt`` placed before the client's own system text (``family``: the client's)."""
    if not prompt:
        return payload
    if family == "openai":
        messages = payload.get("messages")
        listed = messages if isinstance(messages, list) else []
        return {**payload, "messages": [{"role": "system", "content": prompt}, *listed]}
    if family == "responses":
        own = payload.get("instructions")
        joined = f"{prompt}\n\n{own}" if isinstance(own, str) and own else prompt
        return {**payload, "instructions": joined}
    if family == "claude":
        return {**payload, "system": _claude_system(prompt, payload.get("system"))}
    if family == "gemini":
        rest = {k: v for k, v in payload.items() if k != "system_instruction"}
        return {**rest, "systemInstruction": _gemini_system(prompt, payload)}
    return payload


def _claude_system(prompt: str, own: Any) -> Any:
    if isinstance(own, list):
        return [{"type": "text", "text": prompt}, *own]
    if isinstance(own, str) and own:
        return f"{prompt}\n\n{own}"
    return prompt


def _gemini_system(prompt: str, payload: dict[str, Any]) -> dict[str, Any]:
    own = payload.get("systemInstruction", payload.get("system_instruction"))
    if isinstance(own, str):
        own = {"parts": [{"text": own}]}
    parts = own.get("parts") if isinstance(own, dict) else None
    listed = parts if isinstance(parts, list) else []
    return {**(own if isinstance(own, dict) else {}), "parts": [{"text": prompt}, *listed]}
