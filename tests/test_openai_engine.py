"""OpenAICompatibleEngine against a scripted OpenAI-compatible server on loopback."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest
from fakes import LoopbackServer, send_json

from ec2er.config import SamplingConfig
from ec2er.llm import OpenAIEngineConfig
from ec2er.llm import ChatRequest, build_engine
from ec2er.schemas import ReasonedAnswer


class FakeOpenAI(LoopbackServer):
    """Answers chat completions; fails the first ``fail_first`` calls with ``fail_status``."""

    def __init__(self, fail_first: int = 0, fail_status: int = 429, delay_s: float = 0.0,
                 reply: str = '{"reasoning": "r", "answer": "B"}', retry_after_ms: int | None = 10):
        self.fail_first, self.fail_status, self.delay_s, self.reply = fail_first, fail_status, delay_s, reply
        self.retry_after_ms = retry_after_ms
        self.bodies: list[dict] = []
        self.arrivals: list[float] = []  # monotonic time of each request
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.arrivals.append(time.monotonic())
                    fake.bodies.append(body)
                    n = len(fake.bodies)
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    time.sleep(fake.delay_s)
                    if n <= fake.fail_first:
                        hint = {} if fake.retry_after_ms is None else {"retry-after-ms": str(fake.retry_after_ms)}
                        send_json(self, fake.fail_status, {"error": {"message": "slow down"}}, hint)
                    else:
                        send_json(self, 200, {
                            "id": f"c{n}", "object": "chat.completion", "created": 0, "model": body["model"],
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": fake.reply}}],
                            "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12,
                                      "prompt_tokens_details": {"cached_tokens": 3}}})
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

        super().__init__(Handler)


def _engine(fake: FakeOpenAI, **kw):
    return build_engine(OpenAIEngineConfig(model="base-model", base_url=fake.base_url, **kw))


def _req(i: int, **kw) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": f"q{i}"}],
                       sampling=SamplingConfig(max_tokens=32, seed=i), **kw)


def test_structured_batch_with_bounded_concurrency_and_adapters():
    with FakeOpenAI(delay_s=0.05) as fake:
        engine = _engine(fake, max_concurrency=3)
        reqs = [_req(i, response_model=ReasonedAnswer, adapter="lora_a" if i % 2 else None) for i in range(10)]
        results = engine.chat(reqs)
    assert all(r.ok and r.parsed.answer == "B" for r in results)
    assert fake.max_in_flight <= 3
    assert {b["model"] for b in fake.bodies} == {"base-model", "lora_a"}
    fmt = fake.bodies[0]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == ReasonedAnswer.model_json_schema()
    assert results[0].prompt_tokens == 7 and results[0].completion_tokens == 5
    assert results[0].cached_tokens == 3



def test_sampling_maps_onto_the_openai_body():
    engine = build_engine(OpenAIEngineConfig(model="m", base_url="http://127.0.0.1:9/v1"))
    plain = engine.request_body(_req(0))
    assert "presence_penalty" not in plain and "extra_body" not in plain and plain["seed"] == 0
    sampling = SamplingConfig(max_tokens=8, presence_penalty=0.6, repetition_penalty=1.1, stop=["\n"])
    body = engine.request_body(ChatRequest(messages=[{"role": "user", "content": "q"}], sampling=sampling))
    assert body["presence_penalty"] == 0.6 and body["extra_body"] == {"repetition_penalty": 1.1}
    assert body["stop"] == ["\n"] and body["max_tokens"] == 8


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retries_on_429_and_5xx(status):
    with FakeOpenAI(fail_first=2, fail_status=status) as fake:
        (result,) = _engine(fake, max_retries=3).chat([_req(0)])
    assert result.ok and len(fake.bodies) == 3


def test_retry_waits_back_off_exponentially_or_as_the_server_asks():
    """Without a hint from the server the waits grow exponentially (the client's 0.5 s x 2^n,
    less up to 25% jitter); with a Retry-After hint the client waits what the server asked."""
    status = 503
    with FakeOpenAI(fail_first=2, fail_status=status, retry_after_ms=None) as fake:
        (result,) = _engine(fake, max_retries=3).chat([_req(0)])
    assert result.ok and len(fake.bodies) == 3
    first, second = (b - a for a, b in zip(fake.arrivals, fake.arrivals[1:]))
    assert 0.35 <= first < 0.75 and 0.7 <= second < 1.5 and second > first
    with FakeOpenAI(fail_first=1, fail_status=status, retry_after_ms=1200) as fake:
        (result,) = _engine(fake, max_retries=3).chat([_req(0)])
    assert result.ok and fake.arrivals[1] - fake.arrivals[0] >= 1.15


def test_exhausted_retries_and_client_errors_are_typed_per_row():
    with FakeOpenAI(fail_first=100, fail_status=429) as fake:
        (result,) = _engine(fake, max_retries=1).chat([_req(0)])
    assert result.error.kind == "http" and "429" in result.error.message and result.error.transient
    with FakeOpenAI(fail_first=100, fail_status=400) as fake:
        (result,) = _engine(fake, max_retries=3).chat([_req(0)])
    # 4xx other than 408/409/429: the request's own fault, not retried now nor worth a later run
    assert result.error.kind == "rejected" and not result.error.transient and len(fake.bodies) == 1


def test_timeout_is_a_typed_error():
    with FakeOpenAI(delay_s=1.0) as fake:
        (result,) = _engine(fake, timeout_s=0.2, max_retries=0).chat([_req(0)])
    assert result.error is not None and result.error.kind == "timeout"


def test_invalid_json_is_reasked_then_reported():
    with FakeOpenAI(reply="I think B.") as fake:
        (result,) = _engine(fake, max_reasks=2).chat([_req(0, response_model=ReasonedAnswer)])
    assert result.error.kind == "parse" and result.attempts == 3 and len(fake.bodies) == 3
    reask = fake.bodies[-1]["messages"]
    assert reask[-2] == {"role": "assistant", "content": "I think B."}
    assert "could not be used" in reask[-1]["content"]


def test_without_structured_outputs_no_response_format_is_sent():
    with FakeOpenAI(reply='```json\n{"reasoning": "r", "answer": "D"}\n```') as fake:
        (result,) = _engine(fake, structured_outputs=False).chat([_req(0, response_model=ReasonedAnswer)])
    assert result.parsed.answer == "D" and "response_format" not in fake.bodies[0]


def test_works_from_inside_a_running_event_loop():
    """Ray Serve replicas and notebooks call engines from async code."""
    import asyncio

    async def call():
        with FakeOpenAI() as fake:
            return _engine(fake).chat([_req(0, response_model=ReasonedAnswer)])

    (result,) = asyncio.run(call())
    assert result.ok and result.parsed.answer == "B"
