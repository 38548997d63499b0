"""The neutral representation every dialect maps to and from (hub and spoke).

A request from client dialect A to upstream family B is ``B.render_request(A.parse_request(body))``;
the answer is ``A.render_response(B.parse_response(body))``, and streams compose the same way
through ``Event`` objects. Semantics are fixed here once so each side converts from one meaning:

* usage: ``input_tokens`` includes cached (read) and cache-write tokens; ``output_tokens`` includes
  reasoning tokens; the components are reported alongside;
* finish: one neutral reason plus the native upstream value;
* thinking: a mode (none, auto, budget, level) plus a separate "show the reasoning" intent;
* system text: ordered segments, top-level or anchored before a message position;
* tool calls and results: original names and ids (shortened or sanitised names live only inside one
  dialect's render/parse pair); results keep text and image parts and ``is_error``;
* reasoning: text plus the signature / encrypted blob and the family that produced it.

Pure: no Django, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Family = Literal["openai", "responses", "claude", "gemini"]
Role = Literal["user", "assistant"]
FinishReason = Literal[
    "stop", "length", "tool_calls", "content_filter", "stop_sequence", "refusal", "pause_turn", "other"
]


# --- content parts -------------------------------------------------------------------------


@dataclass(slots=True)
class Text:
    text: str
    cache_control: dict[str, Any] | None = None


@dataclass(slots=True)
class Image:
    """An image: inline base64 ``data`` with its media type, or a remote ``url``."""

    data: str = ""
    media_type: str = ""
    url: str = ""
    detail: str | None = None


@dataclass(slots=True)
class File:
    """A document: inline base64 ``data``, or a ``url`` / provider ``file_id``."""

    data: str = ""
    media_type: str = ""
    filename: str = ""
    url: str = ""
    file_id: str = ""


@dataclass(slots=True)
class Audio:
    data: str
    format: str = "wav"


@dataclass(slots=True)
class Reasoning:
    """Model reasoning: visible text and/or an opaque signature the producing family can replay."""

    text: str = ""
    signature: str = ""
    family: Family | None = None
    redacted: bool = False


@dataclass(slots=True)
class ToolCall:
    """A call the model made. ``arguments`` is JSON text (custom tools: the raw input string)."""

    id: str
    name: str
    arguments: str = "{}"
    kind: Literal["function", "custom"] = "function"
    signature: str = ""  # a Gemini thoughtSignature riding on the call


@dataclass(slots=True)
class ToolResult:
    """The output of a tool call, sent back by the client."""

    call_id: str
    content: list[Text | Image | File] = field(default_factory=list)
    is_error: bool = False
    name: str = ""  # filled from the matching call when the source does not carry it
    kind: Literal["function", "custom"] = "function"


Part = Text | Image | File | Audio | Reasoning | ToolCall | ToolResult


@dataclass(slots=True)
class Message:
    role: Role
    parts: list[Part] = field(default_factory=list)


@dataclass(slots=True)
class SystemSegment:
    """System text. ``position`` None is top-level; N anchors it just before ``messages[N]``."""

    parts: list[Text]
    position: int | None = None
    role_hint: Literal["system", "developer"] = "system"


# --- request -------------------------------------------------------------------------------


@dataclass(slots=True)
class Tool:
    """A tool the model may call. ``parameters`` is a JSON schema (custom tools: ``format`` instead)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    kind: Literal["function", "custom", "builtin"] = "function"
    strict: bool | None = None
    format: dict[str, Any] | None = None  # custom (freeform) tools
    builtin: dict[str, Any] | None = None  # a provider built-in tool, in its source dialect's shape
    cache_control: dict[str, Any] | None = None


@dataclass(slots=True)
class ToolChoice:
    mode: Literal["auto", "none", "required", "tool"]
    name: str = ""
    parallel: bool | None = None


@dataclass(slots=True)
class Thinking:
    """How much the model should think, and whether the client wants to see it."""

    mode: Literal["none", "auto", "budget", "level"] | None = None
    budget: int | None = None
    level: str | None = None
    include_thoughts: bool | None = None  # the summary-visibility intent


@dataclass(slots=True)
class ResponseFormat:
    type: Literal["text", "json_object", "json_schema"]
    name: str = ""
    schema: dict[str, Any] | None = None
    strict: bool | None = None


@dataclass(slots=True)
class Request:
    """One model request, independent of the dialect it arrived in."""

    model: str
    messages: list[Message] = field(default_factory=list)
    system: list[SystemSegment] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    n: int | None = None
    thinking: Thinking | None = None
    response_format: ResponseFormat | None = None
    stream: bool = False
    include_usage: bool = False  # OpenAI stream_options.include_usage
    user: str = ""
    service_tier: str = ""
    betas: list[str] = field(default_factory=list)  # Anthropic beta flags (header and body)
    source: Family | None = None
    # Source-dialect fields the IR does not model, keyed by the family that may use them.
    extensions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def top_level_system(self) -> list[SystemSegment]:
        return [s for s in self.system if s.position is None]

    def tool_name_for(self, call_id: str) -> str:
        """The name of the earlier call ``call_id`` answers ("" when unknown)."""
        for message in self.messages:
            for part in message.parts:
                if isinstance(part, ToolCall) and part.id == call_id:
                    return part.name
        return ""


# --- response ------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Usage:
    """Token counts of one attempt, normalised.

    ``input_tokens`` includes ``cached_tokens`` (cache reads) and ``cache_write_tokens``;
    ``output_tokens`` includes ``reasoning_tokens``.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    cache_write_tokens: int = 0

    def merged(self, newer: Usage) -> Usage:
        """Combine usage reported in pieces (a later non-zero value wins)."""
        return Usage(
            input_tokens=newer.input_tokens or self.input_tokens,
            output_tokens=newer.output_tokens or self.output_tokens,
            cached_tokens=newer.cached_tokens or self.cached_tokens,
            reasoning_tokens=newer.reasoning_tokens or self.reasoning_tokens,
            total_tokens=newer.total_tokens or self.total_tokens,
            cache_write_tokens=newer.cache_write_tokens or self.cache_write_tokens,
        )

    @property
    def total(self) -> int:
        return self.total_tokens or self.input_tokens + self.output_tokens


@dataclass(slots=True)
class Finish:
    reason: FinishReason = "stop"
    native: str = ""
    stop_sequence: str = ""


@dataclass(slots=True)
class Response:
    """A complete model answer. ``parts`` holds Text, Reasoning, ToolCall and Image outputs in order."""

    id: str = ""
    model: str = ""
    created: int = 0
    parts: list[Part] = field(default_factory=list)
    finish: Finish = field(default_factory=Finish)
    usage: Usage = field(default_factory=Usage)

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, Text))

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [p for p in self.parts if isinstance(p, ToolCall)]


# --- stream events -------------------------------------------------------------------------


@dataclass(slots=True)
class Start:
    """The upstream began answering; ``usage`` carries input tokens when already known."""

    id: str = ""
    model: str = ""
    created: int = 0
    usage: Usage | None = None


@dataclass(slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class ReasoningDelta:
    text: str


@dataclass(slots=True)
class ReasoningDone:
    """The current reasoning block is complete; ``signature`` is its replayable blob, if any."""

    signature: str = ""
    family: Family | None = None
    redacted: bool = False


@dataclass(slots=True)
class ToolCallStart:
    """A tool call begins. ``index`` is its 0-based ordinal in this response; id and name are known."""

    index: int
    id: str
    name: str
    kind: Literal["function", "custom"] = "function"
    signature: str = ""


@dataclass(slots=True)
class ToolCallDelta:
    """A fragment of the arguments of call ``index`` (fragments of several calls may interleave)."""

    index: int
    arguments: str


@dataclass(slots=True)
class ToolCallEnd:
    index: int


@dataclass(slots=True)
class ImageOutput:
    data: str
    media_type: str = "image/png"


@dataclass(slots=True)
class UsageUpdate:
    usage: Usage


@dataclass(slots=True)
class End:
    """The upstream finished normally."""

    finish: Finish


@dataclass(slots=True)
class StreamError:
    """The upstream failed mid-stream."""

    status: int
    message: str
    type: str = ""


Event = (
    Start
    | TextDelta
    | ReasoningDelta
    | ReasoningDone
    | ToolCallStart
    | ToolCallDelta
    | ToolCallEnd
    | ImageOutput
    | UsageUpdate
    | End
    | StreamError
)


class Aggregator:
    """Folds a stream of events into one ``Response`` (for non-stream clients of streaming upstreams)."""

    def __init__(self) -> None:
        self.response = Response()
        self.error: StreamError | None = None
        self.ended = False
        self._calls: dict[int, ToolCall] = {}
        self._open_reasoning: Reasoning | None = None

    def feed(self, events: list[Event]) -> None:
        for event in events:
            self._apply(event)

    def _apply(self, event: Event) -> None:
        resp = self.response
        if isinstance(event, Start):
            resp.id, resp.model, resp.created = event.id or resp.id, event.model or resp.model, event.created
            if event.usage:
                resp.usage = resp.usage.merged(event.usage)
        elif isinstance(event, TextDelta):
            self._close_reasoning()
            last = resp.parts[-1] if resp.parts else None
            if isinstance(last, Text):
                last.text += event.text
            else:
                resp.parts.append(Text(event.text))
        elif isinstance(event, ReasoningDelta):
            if self._open_reasoning is None:
                self._open_reasoning = Reasoning()
                resp.parts.append(self._open_reasoning)
            self._open_reasoning.text += event.text
        elif isinstance(event, ReasoningDone):
            block = self._open_reasoning or Reasoning()
            if self._open_reasoning is None:
                resp.parts.append(block)
            block.signature, block.family, block.redacted = event.signature, event.family, event.redacted
            self._open_reasoning = None
        else:
            self._apply_other(event)

    def _apply_other(self, event: Event) -> None:
        resp = self.response
        if isinstance(event, ToolCallStart):
            self._close_reasoning()
            call = ToolCall(id=event.id, name=event.name, arguments="", kind=event.kind, signature=event.signature)
            self._calls[event.index] = call
            resp.parts.append(call)
        elif isinstance(event, ToolCallDelta) and event.index in self._calls:
            self._calls[event.index].arguments += event.arguments
        elif isinstance(event, ImageOutput):
            resp.parts.append(Image(data=event.data, media_type=event.media_type))
        elif isinstance(event, UsageUpdate):
            resp.usage = resp.usage.merged(event.usage)
        elif isinstance(event, End):
            resp.finish = event.finish
            self.ended = True
            for call in self._calls.values():
                if call.kind == "function" and not call.arguments:
                    call.arguments = "{}"
        elif isinstance(event, StreamError):
            self.error = event

    def _close_reasoning(self) -> None:
        self._open_reasoning = None
