"""OpenAICompatibleEngine against a scripted OpenAI-compatible server on loopback."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ec2er.config import EngineConfig, SamplingConfig
from ec2er.llm import ChatRequest, build_engine
from ec2er.schemas import ReasonedAnswer


class FakeOpenAI:
    """Answers chat completions; fails the first ``fail_first`` calls with ``fail_status``."""

    def __init__(self, fail_first: int = 0, fail_status: int = 429, delay_s: float = 0.0,
                 reply: str = '{"reasoning": "r", "answer": "B"}'):
        self.fail_first, self.fail_status, self.delay_s, self.reply = fail_first, fail_status, delay_s, reply
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.bodies.append(body)
                    n = len(fake.bodies)
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    time.sleep(fake.delay_s)
                    if n <= fake.fail_first:
                        self._send(fake.fail_status, {"error": {"message": "slow down"}}, {"retry-after-ms": "10"})
                    else:
                        self._send(200, {
                            "id": f"c{n}", "object": "chat.completion", "created": 0, "model": body["model"],
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": fake.reply}}],
                            "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12,
                                      "prompt_tokens_details": {"cached_tokens": 3}}})
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

            def _send(self, status, obj, headers=None):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _engine(fake: FakeOpenAI, **kw):
    return build_engine(EngineConfig(kind="openai", model="base-model", base_url=fake.base_url, **kw))


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
    engine = build_engine(EngineConfig(kind="openai", model="m", base_url="http://127.0.0.1:9/v1"))
    plain = engine.request_body(_req(0))
    assert "presence_penalty" not in plain and "extra_body" not in plain and plain["seed"] == 0
    sampling = SamplingConfig(max_tokens=8, presence_penalty=0.6, repetition_penalty=1.1, stop=["\n"])
    body = engine.request_body(ChatRequest(messages=[{"role": "user", "content": "q"}], sampling=sampling))
    assert body["presence_penalty"] == 0.6 and body["extra_body"] == {"repetition_penalty": 1.1}
    assert body["stop"] == ["\n"] and body["max_tokens"] == 8


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retries_with_backoff_on_429_and_5xx(status):
    with FakeOpenAI(fail_first=2, fail_status=status) as fake:
        (result,) = _engine(fake, max_retries=3).chat([_req(0)])
    assert result.ok and len(fake.bodies) == 3


def test_exhausted_retries_and_client_errors_are_typed_per_row():
    with FakeOpenAI(fail_first=100, fail_status=429) as fake:
        (result,) = _engine(fake, max_retries=1).chat([_req(0)])
    assert result.error.kind == "http" and "429" in result.error.message
    with FakeOpenAI(fail_first=100, fail_status=400) as fake:
        (result,) = _engine(fake, max_retries=3).chat([_req(0)])
    assert result.error.kind == "http" and len(fake.bodies) == 1  # 4xx other than 408/409/429: no retry


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
