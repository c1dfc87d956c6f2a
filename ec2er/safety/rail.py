"""The crisis rail: an ASGI middleware in front of an OpenAI-compatible chat endpoint.

Before the model (``check_input``): the last user message of a ``POST .../chat/completions`` (or
the prompt of a ``POST .../completions``) is assessed (``ec2er.safety.aassess``: the rules, and the guard if the config names one). A high-risk
message is answered with the deployer's ``crisis_response`` instead of the model's reply, never
silently: the response carries the header ``x-ec2er-safety: crisis_response`` and a ``safety``
field (level, category, rule), streamed (server-sent events) when the request asked for a stream.

After the model (``check_output``): the reply is searched for means information (doses, methods:
``rules.means_information``). A whole reply carrying it has its content replaced by
``withheld_response`` (header ``x-ec2er-safety: output_withheld``, a ``safety`` field,
``finish_reason: content_filter``). In a stream the rail forwards each event once it is complete,
checks the text streamed so far before forwarding, and on a match sends a last event saying the
rest was withheld and ends the stream: text before the match has reached the client, the match
and everything after it has not. Both routes answer in their own shape (``chat.completion`` or
``text_completion``); a scoring request to ``/completions`` (``echo``: the prompt's log-probabilities,
as lm-eval's loglikelihood asks) reads no reply to a person, so its input is not assessed.

Every decision is counted (``RailMetrics``: in-process counts, and a Ray Serve metric when the rail
runs in a Serve replica) and logged with the level, category and rule, without the message text
unless ``log_text`` says so. Pure ASGI (not Starlette's BaseHTTPMiddleware) so that streaming
responses pass through as streams.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import Field

from ec2er.config import StrictModel
from ec2er.safety.assess import aassess
from ec2er.safety.guard import guard_engine
from ec2er.safety.rules import means_information
from ec2er.safety.schema import GuardConfig, RiskAssessment, RiskLevel, SafetyConfig

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HEADER = b"x-ec2er-safety"
# The time the rail spent on a request (its input assessment, and for a whole reply its output
# check), as a W3C Server-Timing entry on the response: what bench_serve reads to report the
# latency the rail adds. A stream's header leaves before its events are checked: input time only.
TIMING_HEADER, TIMING_METRIC = b"server-timing", "ec2er-rail"
CONTEXT_CHARS = 400  # the streamed text re-checked at each event: longer than any means rule's match

DEFAULT_CRISIS_RESPONSE = (
    "It sounds like you are going through something very painful, and I'm really glad you said it. "
    "I'm not able to help with this the way a person can. If you are in danger or might act on these "
    "thoughts, please call your local emergency number now. You can also reach a crisis line, any time: "
    "the deployer of this service has not set local resources, so please look up the crisis line for "
    "your country. You don't have to go through this alone.")
DEFAULT_WITHHELD = ("Part of this reply was withheld because it contained information that could be used "
                    "for self-harm. If you are struggling, please reach out to someone you trust or a crisis line.")


class RailConfig(StrictModel):
    """A serving recipe's ``safety:`` block (off unless the recipe has one and ``enabled`` is true)."""

    enabled: bool = True
    crisis_response: str = Field(DEFAULT_CRISIS_RESPONSE, min_length=1,
                                 description="the reply to a high-risk message: put your region's crisis lines and "
                                             "emergency number here")
    withheld_response: str = Field(DEFAULT_WITHHELD, min_length=1,
                                   description="what replaces a reply that carried means information")
    check_input: bool = True
    check_output: bool = True
    log_text: bool = Field(False, description="log the assessed message text with each decision (off: "
                                              "decisions are logged with level, category and rule only)")
    guard: GuardConfig = Field(default_factory=lambda: GuardConfig(mode="off"),
                               description="tier 2 for input checks (adds a guard model's latency)")


class RailMetrics:
    """Counts of the rail's decisions, by check (input/output) and decision; mirrored to a Ray Serve
    counter (``ec2er_safety_rail_decisions``) when Ray runs in this process."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self._serve_counter: Any = None
        self._serve_tried = False

    def record(self, check: str, decision: str) -> None:
        self.counts[(check, decision)] += 1
        counter = self._ray_counter()
        if counter is not None:
            counter.inc(tags={"check": check, "decision": decision})

    def _ray_counter(self) -> Any:
        if not self._serve_tried and "ray" in sys.modules:  # never import Ray just for a metric
            self._serve_tried = True
            try:
                import ray
                from ray.serve.metrics import Counter as ServeCounter

                if ray.is_initialized():
                    self._serve_counter = ServeCounter("ec2er_safety_rail_decisions",
                                                       description="crisis rail decisions",
                                                       tag_keys=("check", "decision"))
            except Exception as e:  # a metric must never break serving
                log.debug("safety rail: no Ray Serve metric (%s)", e)
        return self._serve_counter


def last_user_text(request: dict[str, Any]) -> str | None:
    """The text of the request's last user message (text parts of a multi-part content joined)."""
    messages = request.get("messages")
    if not isinstance(messages, list):
        return None
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content if isinstance(content, str) else None
    return None


def _safety_field(action: str, a: RiskAssessment | None = None, rule: str | None = None) -> dict[str, Any]:
    field: dict[str, Any] = {"action": action}
    if a is not None:
        field |= {"level": a.level.value, "category": a.category.value if a.category else None,
                  "rule": a.evidence[0].rule if a.evidence else None, "decided_by": a.decided_by}
    if rule is not None:
        field["rule"] = rule
    return field


def _completion(model: Any, content: str, safety: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {"id": f"chatcmpl-safety-{uuid.uuid4().hex[:16]}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                         "finish_reason": finish}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}, "safety": safety}


def _chunk(model: Any, cid: str, delta: dict[str, Any], finish: str | None, safety: dict[str, Any] | None) -> bytes:
    obj = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(obj | ({"safety": safety} if safety else {})).encode() + b"\n\n"


def prompt_text(request: dict[str, Any]) -> str | None:
    """The text of a completions request's prompt (a list of prompts joined; token ids: None)."""
    prompt = request.get("prompt")
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        prompt = "\n".join(prompt)
    return prompt if isinstance(prompt, str) else None


class _Shape:
    """How one OpenAI route carries text: in requests, replies and stream events. The chat route's
    is this class; the completions route's is ``_TextShape``."""

    completion_object = "chat.completion"

    def request_text(self, request: dict[str, Any]) -> str | None:
        return last_user_text(request)

    def reply(self, model: Any, content: str, safety: dict[str, Any]) -> dict[str, Any]:
        return _completion(model, content, safety)

    def chunk(self, model: Any, cid: str, content: str | None, finish: str | None,
              safety: dict[str, Any] | None, first: bool = False) -> bytes:
        delta = {} if content is None else {"content": content} | ({"role": "assistant"} if first else {})
        return _chunk(model, cid, delta, finish, safety)

    def text_of(self, choice: dict[str, Any], streamed: bool) -> Any:
        return (choice.get("delta") or {}).get("content") if streamed else (choice.get("message") or {}).get("content")

    def set_text(self, choice: dict[str, Any], text: str) -> None:
        choice["message"]["content"] = text


class _TextShape(_Shape):
    completion_object = "text_completion"

    def request_text(self, request: dict[str, Any]) -> str | None:
        return None if request.get("echo") else prompt_text(request)

    def reply(self, model: Any, content: str, safety: dict[str, Any]) -> dict[str, Any]:
        return {"id": f"cmpl-safety-{uuid.uuid4().hex[:16]}", "object": "text_completion", "created": int(time.time()),
                "model": model, "choices": [{"index": 0, "text": content, "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}, "safety": safety}

    def chunk(self, model: Any, cid: str, content: str | None, finish: str | None,
              safety: dict[str, Any] | None, first: bool = False) -> bytes:
        obj = {"id": cid, "object": "text_completion", "created": int(time.time()), "model": model,
               "choices": [{"index": 0, "text": content or "", "logprobs": None, "finish_reason": finish}]}
        return b"data: " + json.dumps(obj | ({"safety": safety} if safety else {})).encode() + b"\n\n"

    def text_of(self, choice: dict[str, Any], streamed: bool) -> Any:
        return choice.get("text")

    def set_text(self, choice: dict[str, Any], text: str) -> None:
        choice["text"] = text


# The routes the rail guards, by the end of their path ("/chat/completions" is tried first).
SHAPES = {"/chat/completions": _Shape(), "/completions": _TextShape()}


def route_shape(scope: Scope) -> _Shape | None:
    path = scope.get("path", "")
    return next((shape for suffix, shape in SHAPES.items() if path.endswith(suffix)), None)


class SafetyRail:
    """``app.add_middleware(SafetyRail, config=RailConfig(...))``; ``metrics`` to share counts."""

    def __init__(self, app: Callable[..., Awaitable[None]], config: RailConfig, metrics: RailMetrics | None = None):
        self.app, self.config = app, config
        self.metrics = metrics or RailMetrics()
        self._assess_config = SafetyConfig(roles=["user"], guard=config.guard)
        # one guard client for the server's life, not one per request
        self._guard = guard_engine(config.guard) if config.guard.mode != "off" else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        shape = route_shape(scope) if scope["type"] == "http" and scope.get("method") == "POST" else None
        if not self.config.enabled or shape is None:
            await self.app(scope, receive, send)
            return
        body, replay = await _buffer(receive)
        try:
            request = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            request = None
        if not isinstance(request, dict):  # the app answers malformed requests with its own 400
            await self.app(scope, replay, send)
            return
        began = time.perf_counter()
        if self.config.check_input and await self._answered_input(request, shape, send):
            return
        if self.config.check_output:
            send = _OutputCheck(send, request, self, shape, time.perf_counter() - began).send
        await self.app(scope, replay, send)

    async def _answered_input(self, request: dict[str, Any], shape: _Shape, send: Send) -> bool:
        """Assess the last user message (the prompt); on high risk send the crisis response and
        return True."""
        text = shape.request_text(request)
        if not text:
            return False
        a = await aassess(text, self._assess_config, self._guard)
        decision = "crisis_response" if a.level is RiskLevel.high else f"pass_{a.level.value}"
        self.decide("input", decision, a, text)
        if a.level is not RiskLevel.high:
            return False
        safety = _safety_field("crisis_response", a)
        model = request.get("model")
        if request.get("stream") is True:
            cid = f"chatcmpl-safety-{uuid.uuid4().hex[:16]}"
            events = (shape.chunk(model, cid, self.config.crisis_response, None, safety, first=True)
                      + shape.chunk(model, cid, None, "stop", None) + b"data: [DONE]\n\n")
            await _respond(send, events, b"text/event-stream", b"crisis_response")
        else:
            body = json.dumps(shape.reply(model, self.config.crisis_response, safety)).encode()
            await _respond(send, body, b"application/json", b"crisis_response")
        return True

    def decide(self, check: str, decision: str, a: RiskAssessment | None, text: str | None,
               rule: str | None = None) -> None:
        self.metrics.record(check, decision)
        if decision == "pass" or decision == "pass_none":
            return  # counted; only what the rail found is logged
        what = f"level {a.level.value}, category {a.category}, rule {a.evidence[0].rule if a.evidence else None}" \
            if a is not None else f"rule {rule}"
        log.info("safety rail: %s %s (%s)%s", check, decision, what,
                 f": {text!r}" if self.config.log_text and text else "")


class _OutputCheck:
    """The ``send`` the app writes its response through: whole JSON replies are buffered and
    checked; event streams are checked event by event."""

    def __init__(self, send: Send, request: dict[str, Any], rail: SafetyRail, shape: _Shape, spent_s: float):
        self.inner, self.request, self.rail, self.shape = send, request, rail, shape
        self.spent_s = spent_s  # the rail's time on this request so far (its input check)
        self.start: Message | None = None
        self.mode = "pass"  # pass | buffer | stream | withheld
        self.buffer = b""
        self.streamed: dict[int, str] = {}

    async def send(self, message: Message) -> None:
        if self.mode == "withheld":
            return  # the stream was ended by the rail: the model's remaining events go nowhere
        if message["type"] == "http.response.start":
            kind = dict(message.get("headers", [])).get(b"content-type", b"")
            if message["status"] == 200 and kind.startswith(b"text/event-stream"):
                self.mode = "stream"
                await self.inner(self._timed(message))
            elif message["status"] == 200 and kind.startswith(b"application/json"):
                self.mode, self.start = "buffer", message
            else:
                await self.inner(message)
            return
        if message["type"] != "http.response.body" or self.mode == "pass":
            await self.inner(message)
        elif self.mode == "buffer":
            await self._buffered(message)
        else:
            await self._stream(message)

    def _timed(self, start: Message) -> Message:
        timing = f"{TIMING_METRIC};dur={self.spent_s * 1000:.3f}".encode()
        return start | {"headers": [*start.get("headers", []), (TIMING_HEADER, timing)]}

    async def _buffered(self, message: Message) -> None:
        self.buffer += message.get("body", b"")
        if message.get("more_body", False):
            return
        assert self.start is not None
        checking = time.perf_counter()
        body, headers = self.buffer, list(self.start.get("headers", []))
        try:
            reply = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            reply = None
        found = self._means_in_reply(reply) if isinstance(reply, dict) else None
        if found is None:
            self.rail.decide("output", "pass", None, None)
        else:
            self.rail.decide("output", "withheld", None, found[1], rule=found[0])
            for choice in reply["choices"]:
                self.shape.set_text(choice, self.rail.config.withheld_response)
                choice["finish_reason"] = "content_filter"
            reply["safety"] = _safety_field("output_withheld", rule=found[0])
            body = json.dumps(reply).encode()
            headers = [(k, v) for k, v in headers if k != b"content-length"]
            headers += [(b"content-length", str(len(body)).encode()), (HEADER, b"output_withheld")]
        self.spent_s += time.perf_counter() - checking
        await self.inner(self._timed(self.start | {"headers": headers}))
        await self.inner({"type": "http.response.body", "body": body, "more_body": False})

    async def _stream(self, message: Message) -> None:
        self.buffer += message.get("body", b"")
        more = message.get("more_body", False)
        while b"\n\n" in self.buffer or (not more and self.buffer):
            event, sep, self.buffer = self.buffer.partition(b"\n\n")
            found = self._means_after(event)
            if found is not None:
                await self._withhold(found)
                return
            await self.inner({"type": "http.response.body", "body": event + sep, "more_body": True})
        if not more:
            self.rail.decide("output", "pass", None, None)
            await self.inner({"type": "http.response.body", "body": b"", "more_body": False})

    def _means_after(self, event: bytes) -> tuple[str, str] | None:
        """(rule, text) when the text streamed so far, with this event, carries means information."""
        data = event.strip()
        if not data.startswith(b"data:") or data == b"data: [DONE]":
            return None
        try:
            chunk = json.loads(data[5:])
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        for choice in chunk.get("choices") or []:
            piece = self.shape.text_of(choice, streamed=True) if isinstance(choice, dict) else None
            if isinstance(piece, str) and piece:
                i = choice.get("index", 0)
                self.streamed[i] = (self.streamed.get(i, "") + piece)[-CONTEXT_CHARS:]
                found = means_information(self.streamed[i])
                if found:
                    return found[0].rule, self.streamed[i]
        return None

    async def _withhold(self, found: tuple[str, str]) -> None:
        self.mode = "withheld"
        self.rail.decide("output", "withheld", None, found[1], rule=found[0])
        cid, model = f"chatcmpl-safety-{uuid.uuid4().hex[:16]}", self.request.get("model")
        tail = (self.shape.chunk(model, cid, "\n\n" + self.rail.config.withheld_response, "content_filter",
                                 _safety_field("output_withheld", rule=found[0])) + b"data: [DONE]\n\n")
        await self.inner({"type": "http.response.body", "body": tail, "more_body": False})

    def _means_in_reply(self, reply: dict[str, Any]) -> tuple[str, str] | None:
        for choice in reply.get("choices") or []:
            content = self.shape.text_of(choice, streamed=False) if isinstance(choice, dict) else None
            if isinstance(content, str):
                found = means_information(content)
                if found:
                    return found[0].rule, content
        return None


async def _buffer(receive: Receive) -> tuple[bytes, Receive]:
    """The whole request body, and a ``receive`` that hands it to the app again."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return b"", _replay_disconnect(message)
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body, sent = b"".join(chunks), False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the client's disconnect, as the app expects

    return body, replay


def _replay_disconnect(message: Message) -> Receive:
    async def replay() -> Message:
        return message

    return replay


async def _respond(send: Send, body: bytes, content_type: bytes, decision: bytes) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                            (HEADER, decision)]})
    await send({"type": "http.response.body", "body": body, "more_body": False})
