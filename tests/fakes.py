"""Deterministic stand-ins for a model: replies derived from each request's content and seed.

``FakeEngine`` answers in-process (``chat`` and ``achat_one``); ``FakeOpenAIServer`` answers the
same replies over HTTP on 127.0.0.1, so the Ray Data job can run with ``engine.kind: openai`` in
its actors without vLLM. The supervisor's verdict is all-met once the transcript has
``all_met_at`` turns (never when None).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ec2er.generation.agents import SupervisorCheck
from ec2er.generation.extraction import EADraft, EUDraft
from ec2er.llm import ChatEngine, ChatRequest, GenerationError, RawCompletion
from ec2er.schemas.taxonomy import EMOTIONS

TURN_LINE = re.compile(r"^\[(\d+)\] ", re.MULTILINE)
MODELS = {m.__name__: m for m in (SupervisorCheck, EUDraft, EADraft)}


def request_hash(messages: list[dict[str, str]], seed: int | None) -> str:
    """A chat request's identity: what the fake's replies and its faults are chosen by."""
    return hashlib.sha256((json.dumps(messages) + str(seed)).encode()).hexdigest()


def schema_subject(schema: dict | None) -> str:
    """The first person an extraction schema allows as the subject (its enum or const), else "Ana"."""
    subject = ((schema or {}).get("properties") or {}).get("subject") or {}
    return (subject.get("enum") or [subject.get("const", "Ana")])[0]


def fake_reply(messages: list[dict[str, str]], seed: int | None, model_name: str | None,
               all_met_at: int | None = 6, duplicate: bool = False, subject: str = "Ana") -> str:
    h = request_hash(messages, seed)
    k = int(h[:6], 16)
    if model_name is None:
        return f"Words {h[:10]} about the situation."
    if model_name == "SupervisorCheck":
        n = len(TURN_LINE.findall(messages[-1]["content"]))
        met = all_met_at is not None and n >= all_met_at
        return json.dumps({"reason": f"{n} turns", "scenario_clear": met, "emotions_present": met,
                           "causes_present": met, "dilemma_present": met, "rich_enough": met})
    if model_name == "EUDraft":
        wrong = [EMOTIONS[(k + i * 7) % len(EMOTIONS)] for i in range(1, 6)]
        causes = [f"cause {i} {h[i:i + 4]}" for i in range(4 + k % 3)]
        if duplicate:
            causes = [causes[0]] * len(causes)
        return json.dumps({"scenario": f"Someone faced a hard moment {h[:8]} at home.", "subject": subject,
                           "correct_emotion": EMOTIONS[k % len(EMOTIONS)], "wrong_emotions": wrong,
                           "correct_cause": causes[0], "wrong_causes": causes[1:],
                           "explanation": "Because of what happened before.", "evidence_turns": [0, 1]})
    return json.dumps({"scenario": f"Someone must decide {h[:8]} what to do.", "subject": subject,
                       "best_choice": f"option 0 {h[:4]}",
                       "worse_choices": [f"option {i} {h[i:i + 4]}" for i in range(1, 4)],
                       "explanation": "It addresses the need directly."})


class FakeEngine(ChatEngine):
    """In-process: ``calls`` records every request in the order the engine received it."""

    def __init__(self, all_met_at: int | None = 6, delay: float = 0.0,
                 fail: Callable[[ChatRequest], bool] = lambda r: False,
                 duplicate: Callable[[ChatRequest], bool] = lambda r: False):
        self.model_name = "fake"
        self.max_reasks = 0
        self.all_met_at, self.delay, self.fail, self.duplicate = all_met_at, delay, fail, duplicate
        self.calls: list[ChatRequest] = []

    def _complete(self, requests):
        return [self._one(r) for r in requests]

    async def _acomplete_one(self, request: ChatRequest) -> RawCompletion:
        self.calls.append(request)
        await asyncio.sleep(self.delay)
        return self._one(request)

    def _one(self, r: ChatRequest) -> RawCompletion:
        if self.fail(r):
            return RawCompletion("", error=GenerationError(kind="validation", message="boom"))
        model = r.response_model.__name__ if r.response_model is not None else None
        schema = r.response_model.model_json_schema() if r.response_model is not None else None
        text = fake_reply(r.messages, r.sampling.seed, model, self.all_met_at, self.duplicate(r),
                          schema_subject(schema))
        return RawCompletion(text, prompt_tokens=sum(len(m["content"]) for m in r.messages) // 4,
                             completion_tokens=len(text) // 4, finish_reason="stop")


def send_json(handler: BaseHTTPRequestHandler, status: int, obj: object,
              headers: dict[str, str] | None = None) -> None:
    data = json.dumps(obj).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(data)


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 (or ``host``: this machine's address, which every Ray
    node reaches), on a free port, as a context manager."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1"):
        self.host = host
        self.server = ThreadingHTTPServer((host, 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeOpenAIServer(LoopbackServer):
    """The fake's replies behind /v1/chat/completions and /v1/models on 127.0.0.1."""

    def __init__(self, model: str = "fake-model", all_met_at: int | None = 6, delay_s: float = 0.0,
                 host: str = "127.0.0.1", more_models: tuple[str, ...] = (), schema_delay_s: float | None = None):
        self.model, self.all_met_at, self.delay_s = model, all_met_at, delay_s
        self.models = (model, *more_models)  # all answer alike; /v1/models lists them all
        self.schema_delay_s = delay_s if schema_delay_s is None else schema_delay_s  # for response_format requests
        self.requests = 0
        self.in_flight: Counter[str] = Counter()  # chat requests being answered, by model name
        self.most_in_flight: Counter[str] = Counter()  # the most at one time, by model name
        # Faults touch plain-text chat requests only (a background or a turn, whose failure fails
        # its dialogue, unlike a supervisor's), chosen by content, never by arrival order, so which
        # requests fail does not depend on how concurrent dialogues interleave:
        # ``fail_all``: every one answers HTTP 503;
        # ``fail_first_of``: n: a request whose content hash is a multiple of n answers 503 the
        # first time it is sent and 200 when a retried dialogue sends it again, so a dialogue needs
        # one try more than it has such requests, the same number in every run.
        self.fail_all = False
        self.fail_first_of: int | None = None
        self.failed_once: set[str] = set()
        self.lock = threading.Lock()
        self.no_choices = False  # every chat request answers 200 without choices (a reply no code expects)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                send_json(self, 200, {"object": "list",
                                      "data": [{"id": m, "object": "model", "owned_by": "x"} for m in fake.models]})

            def do_POST(self):
                import time

                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                model = body["model"]
                with fake.lock:
                    fake.requests += 1
                    failing = not body.get("response_format") and (fake.fail_all or fake.fails_first_time(body))
                    fake.in_flight[model] += 1
                    fake.most_in_flight[model] = max(fake.most_in_flight[model], fake.in_flight[model])
                try:
                    time.sleep(fake.schema_delay_s if body.get("response_format") else fake.delay_s)
                    self.answer(body, failing)
                finally:
                    with fake.lock:
                        fake.in_flight[model] -= 1

            def answer(self, body: dict, failing: bool) -> None:
                if failing:
                    send_json(self, 503, {"error": {"message": "overloaded"}})
                    return
                if fake.no_choices:
                    send_json(self, 200, {"id": "c", "object": "chat.completion", "created": 0,
                                          "model": body["model"], "choices": []})
                    return
                fmt = body.get("response_format") or {}
                name = fmt.get("json_schema", {}).get("name") if fmt else None
                text = fake_reply(body["messages"], body.get("seed"), name, fake.all_met_at,
                                  subject=schema_subject(fmt.get("json_schema", {}).get("schema")))
                send_json(self, 200, {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": text}}],
                            "usage": {"prompt_tokens": 7, "completion_tokens": len(text) // 4,
                                      "total_tokens": 7 + len(text) // 4}})

        super().__init__(Handler, host)

    def fails_first_time(self, body: dict) -> bool:
        """Whether this request is one that ``fail_first_of`` fails, and is sent for the first time."""
        if not self.fail_first_of:
            return False
        key = request_hash(body["messages"], body.get("seed"))
        if int(key[:8], 16) % self.fail_first_of or key in self.failed_once:
            return False
        self.failed_once.add(key)
        return True
