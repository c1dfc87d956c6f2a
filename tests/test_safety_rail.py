"""The crisis rail around a tiny fake chat app (no engine): input answered with the crisis
response, output with means information withheld, whole and streamed; decisions counted."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.testclient import TestClient

from ec2er.safety.rail import HEADER, RailConfig, RailMetrics, SafetyRail

CRISIS = "Please call 988 (US) or 116 123 (Samaritans, UK & Ireland) now."
MEANS_REPLY = "Here is a fact: a lethal dose of that is about 10 g. Anyway, how was your day?"


def fake_app() -> FastAPI:
    """Replies with the request's 'reply' field (or 'ok'), whole or as a stream of word chunks."""
    app = FastAPI()
    app.state.calls = 0

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "bad json"}, status_code=400)
        app.state.calls += 1
        text = body.get("reply", "ok")
        if body.get("stream"):
            async def events():
                for word in text.split(" "):
                    chunk = {"choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk)}\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse({"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                          "finish_reason": "stop"}]})

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        app.state.calls += 1
        text = body.get("reply", "ok")
        if body.get("stream"):
            async def events():
                for word in text.split(" "):
                    yield f"data: {json.dumps({'choices': [{'index': 0, 'text': word + ' ', 'finish_reason': None}]})}\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse({"object": "text_completion",
                             "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}]})

    @app.get("/v1/models")
    async def models():
        return {"data": []}

    return app


def client(**config) -> tuple[TestClient, FastAPI, RailMetrics]:
    app, metrics = fake_app(), RailMetrics()
    app.add_middleware(SafetyRail, config=RailConfig(crisis_response=CRISIS, **config), metrics=metrics)
    return TestClient(app), app, metrics


def _ask(c: TestClient, text: str, **extra):
    return c.post("/v1/chat/completions", json={"model": "m", "messages": [
        {"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"},
        {"role": "user", "content": text}], **extra})


def _streamed_text(body: str) -> tuple[str, list[dict]]:
    chunks = [json.loads(line[6:]) for line in body.split("\n\n") if line.startswith("data: {")]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks), chunks


def test_high_risk_message_gets_the_crisis_response_instead_of_the_model(caplog):
    c, app, metrics = client()
    with caplog.at_level(logging.INFO, logger="ec2er.safety.rail"):
        r = _ask(c, "I want to end it all tonight")
    assert r.status_code == 200 and r.headers[HEADER.decode()] == "crisis_response"
    body = r.json()
    assert body["choices"][0]["message"]["content"] == CRISIS
    assert body["safety"]["action"] == "crisis_response" and body["safety"]["category"] == "suicide"
    assert app.state.calls == 0 and metrics.counts[("input", "crisis_response")] == 1
    assert "end it all" not in caplog.text and "crisis_response" in caplog.text  # no text unless log_text


def test_streamed_crisis_response_and_logged_text_when_asked(caplog):
    c, app, _ = client(log_text=True)
    with caplog.at_level(logging.INFO, logger="ec2er.safety.rail"):
        r = _ask(c, "I've been cutting again", stream=True)
    text, chunks = _streamed_text(r.text)
    assert text == CRISIS and chunks[0]["safety"]["category"] == "self_harm" and r.text.endswith("data: [DONE]\n\n")
    assert app.state.calls == 0 and "cutting again" in caplog.text


def test_safe_and_idiomatic_messages_reach_the_model():
    c, app, metrics = client()
    for text in ("this exam is killing me", "I could kill for a coffee"):
        r = _ask(c, text)
        assert r.json()["choices"][0]["message"]["content"] == "ok" and HEADER.decode() not in r.headers
    ambiguous = _ask(c, "I can't go on like this")  # ambiguous: the model answers, the decision is counted
    assert ambiguous.json()["choices"][0]["message"]["content"] == "ok"
    assert app.state.calls == 3 and metrics.counts[("input", "pass_none")] == 2
    assert metrics.counts[("input", "pass_ambiguous")] == 1 and metrics.counts[("output", "pass")] == 3


def test_means_information_in_a_whole_reply_is_withheld():
    c, _, metrics = client()
    r = _ask(c, "what is the dose of paracetamol", reply=MEANS_REPLY)
    body = r.json()
    assert r.headers[HEADER.decode()] == "output_withheld" and "10 g" not in r.text
    assert body["choices"][0]["finish_reason"] == "content_filter" and body["safety"]["rule"] == "means.lethal_dose"
    assert int(r.headers["content-length"]) == len(r.content) and metrics.counts[("output", "withheld")] == 1


def test_means_information_in_a_stream_is_cut_before_it_reaches_the_client():
    c, _, _ = client()
    r = _ask(c, "tell me something", reply=MEANS_REPLY, stream=True)
    text, chunks = _streamed_text(r.text)
    assert text.startswith("Here is a fact: a lethal ") and "dose" not in text and "how was your day" not in text
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter" and r.text.endswith("data: [DONE]\n\n")
    clean = _ask(c, "tell me something", reply="a calm and kind answer", stream=True)
    assert _streamed_text(clean.text)[0] == "a calm and kind answer " and clean.text.endswith("data: [DONE]\n\n")


def test_rail_off_or_checks_off_and_other_routes_untouched():
    c, app, _ = client(enabled=False)
    assert _ask(c, "I want to kill myself").json()["choices"][0]["message"]["content"] == "ok"
    c, _, _ = client(check_output=False)
    assert _ask(c, "hi", reply=MEANS_REPLY).json()["choices"][0]["message"]["content"] == MEANS_REPLY
    c, _, metrics = client(check_input=False)
    assert _ask(c, "I want to kill myself").json()["choices"][0]["message"]["content"] == "ok"
    assert c.get("/v1/models").json() == {"data": []}
    bad = c.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code in (400, 422) and not metrics.counts[("input", "crisis_response")]


def test_rail_asks_a_guard_for_ambiguous_input(monkeypatch):
    from ec2er.safety import rail as rail_module
    from test_safety import ScriptedGuard

    guard = ScriptedGuard("unsafe\nS11")
    monkeypatch.setattr(rail_module, "guard_engine", lambda config: guard)
    c, app, _ = client(guard={"mode": "ambiguous_only",
                              "engine": {"kind": "openai", "base_url": "http://x/v1", "model": "g"}})
    r = _ask(c, "I can't go on like this")
    assert r.json()["safety"]["decided_by"] == "guard" and app.state.calls == 0 and len(guard.requests) == 1


def test_the_completions_route_is_guarded_in_its_own_shape():
    c, app, metrics = client()
    r = c.post("/v1/completions", json={"model": "m", "prompt": "User: I want to end it all tonight\nAssistant:"})
    assert r.status_code == 200 and r.headers[HEADER.decode()] == "crisis_response"
    assert r.json()["object"] == "text_completion" and r.json()["choices"][0]["text"] == CRISIS
    assert app.state.calls == 0
    streamed = c.post("/v1/completions", json={"model": "m", "prompt": ["I want to end it all tonight"], "stream": True})
    chunks = [json.loads(line[6:]) for line in streamed.text.split("\n\n") if line.startswith("data: {")]
    assert "".join(ch["choices"][0]["text"] for ch in chunks) == CRISIS and app.state.calls == 0
    withheld = c.post("/v1/completions", json={"model": "m", "prompt": "Tell me a fact.", "reply": MEANS_REPLY})
    choice = withheld.json()["choices"][0]
    assert withheld.headers[HEADER.decode()] == "output_withheld" and "10 g" not in choice["text"]
    assert choice["finish_reason"] == "content_filter"
    cut = c.post("/v1/completions", json={"model": "m", "prompt": "Tell me.", "reply": MEANS_REPLY, "stream": True})
    text = "".join(json.loads(line[6:])["choices"][0]["text"] for line in cut.text.split("\n\n")
                   if line.startswith("data: {"))
    assert text.startswith("Here is a fact:") and "10 g" not in text and "withheld" in text
    # a scoring request (the prompt's log-probabilities, lm-eval's loglikelihood) is no reply to a person
    scored = c.post("/v1/completions", json={"model": "m", "prompt": "I want to end it all tonight", "echo": True,
                                             "max_tokens": 0, "logprobs": 1})
    assert scored.status_code == 200 and HEADER.decode() not in scored.headers
    assert metrics.counts[("input", "crisis_response")] == 2 and metrics.counts[("output", "withheld")] == 2


def test_each_checked_reply_says_how_long_the_rail_took():
    c, _, _ = client()
    timing = _ask(c, "How was your weekend?").headers["server-timing"]
    name, dur = timing.split(";dur=")
    assert name == "ec2er-rail" and 0 < float(dur) < 1000
    assert "ec2er-rail;dur=" in _ask(c, "How was your weekend?", stream=True).headers["server-timing"]
