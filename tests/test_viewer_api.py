"""The viewer's API on a tiny run made without any model: dialogues from the fake engine written
as results Parquet, curation, training and evaluation files written by hand in their documented
formats. Paging, filters, a results file still being written, path escapes, the token."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fakes import FakeEngine
from fastapi.testclient import TestClient
from test_generation import make_config, run

from ec2er.evaluation.records import EUAnswer, Prediction
from ec2er.generation.dialogue import DialogueState, dialogue_result
from ec2er.generation.outputs import result_table
from ec2er.generation.plan import sampler_specs
from ec2er.schemas.dialogue import Speaker
from ec2er.schemas.facts import (
    CHAIN_SUMMARY,
    CuratedFiles,
    EvaluationFiles,
    GenerationFiles,
    TrainingFiles,
)
from ec2er.viewer import queries
from ec2er.viewer.app import TOKEN_COOKIE, build_app

PAYLOAD = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
DIALOGUES = 12
FAILED = 3  # the last three planned dialogues fail
RISKY = 2  # the dialogue whose client voices risk


def _png() -> bytes:
    """A valid 1x1 PNG (the viewer serves plots as they are)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\xff\xff")) + chunk(b"IEND", b""))


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _results() -> list:
    config = make_config(DIALOGUES)
    specs = sampler_specs(config, range(DIALOGUES))
    results = run(FakeEngine(), config, specs[:DIALOGUES - FAILED])
    for spec in specs[DIALOGUES - FAILED:]:
        results.append(dialogue_result(DialogueState(spec, error="turn: invalid_json: no JSON object found",
                                                     stop_reason="failed"), "fake"))
    marked = results[1]  # model text carrying markup: must show as text
    marked.dialogue.turns[1].text = f"I said {PAYLOAD} to them."
    marked.metadata["persona"] = f"A persona {PAYLOAD}"
    marked.eu[0]["scenario"] = f"Ana read {PAYLOAD} aloud."
    risky = results[RISKY]  # a client at risk, and a therapist who dismisses it: its safety record says so
    client = next(t for t in risky.dialogue.turns if t.speaker is Speaker.CLIENT)
    client.text = "Honestly, I wish I was dead most days."
    reply = next(t for t in risky.dialogue.turns if t.index > client.index and t.speaker is Speaker.THERAPIST)
    reply.text = "Everyone feels that way sometimes. Just cheer up!"
    return results


def make_run(root: Path) -> Path:
    """A chain's folder with generate/, curate/, train/, evaluate/ and chain.json."""
    results = _results()
    gen = root / "generate"
    (gen / GenerationFiles.RESULTS).mkdir(parents=True)
    pq.write_table(result_table(results[:8]), gen / GenerationFiles.RESULTS / "a-000.parquet")
    pq.write_table(result_table(results[8:]), gen / GenerationFiles.RESULTS / "b-001.parquet")
    os.utime(gen / GenerationFiles.RESULTS / "b-001.parquet", (2e9, 2e9))  # the newer file
    (gen / GenerationFiles.STATS).write_text(json.dumps({
        "dialogues": {"committed": DIALOGUES, "ok": DIALOGUES - FAILED, "failed": FAILED, "planned": DIALOGUES},
        "items": {"eu": 36, "ea": 36, "failed": 0}, "tokens": {"completion": 9000},
        "distributions": {"eu_coarse": {"emotional_cues": 10}, "ea_category": {"Personal-Self": 9},
                          "theme_category": {"Education": 4}, "stop_reason": {"all_met": 9, "failed": 3},
                          "turns": {"6": 9}}}))
    (gen / GenerationFiles.PROGRESS).write_text(json.dumps({
        "state": "done", "updated": 1.0, "started": 0.0, "planned": DIALOGUES, "already": 0,
        "dialogues": DIALOGUES, "turns": 54, "completion_tokens": 9000, "tokens_per_s": 30.0,
        "fraction": 1.0, "eta_s": None}))

    items = [x for r in results for x in r.eu + r.ea]
    bench = root.parent / f"{root.name}-bench"
    _jsonl(bench / "EU.jsonl", [{"qid": "7", "language": "en", "scenario": "Benchmark scenario about a lost dog.",
                                 "subject": "Kai"}])
    _jsonl(bench / "EA.jsonl", [{"qid": "3", "language": "en", "scenario": "Benchmark EA scenario."}])
    cur = root / "curate"
    _jsonl(cur / CuratedFiles.TRAIN, items[2:20])
    _jsonl(cur / CuratedFiles.VAL, items[20:24])
    _jsonl(cur / CuratedFiles.REJECTS, [
        {"file": "results#x", "line": 1, "qid": items[0]["qid"], "item": items[0],
         "reasons": [{"code": "near_duplicate", "detail": f"near-duplicate of qid {items[2]['qid']}"}],
         "matches": [{"code": "near_duplicate", "qid": items[2]["qid"], "file": "results#y", "line": 1,
                      "scenario": items[2]["scenario"]}]},
        {"file": "results#x", "line": 2, "qid": items[1]["qid"], "item": items[1],
         "reasons": [{"code": "benchmark_contamination", "detail": "near EU.jsonl:en:7 (score 91)"}],
         "matches": [{"code": "benchmark_contamination", "benchmark": str(bench), "ref": "EU.jsonl:en:7",
                      "file": "EU.jsonl", "language": "en", "qid": "7", "score": 91.0}]},
        {"file": "results#z", "line": 3, "qid": items[24]["qid"], "item": items[24],
         "reasons": [{"code": "scenario_length", "detail": "3 words, expected 20-200"}]}])
    (cur / CuratedFiles.STATS).write_text(json.dumps({
        "counts": {"read": 27, "kept": 22, "train": 18, "val": 4, "rejected": 3},
        "rejections": {"near_duplicate": 1, "benchmark_contamination": 1, "scenario_length": 1},
        "decontamination": {"benchmark": str(bench), "dropped": 1, "items": []},
        "dedup": {"removed": 1}}))
    (cur / CuratedFiles.DATACARD).write_text("# Data card\n\n| reason | items |\n|---|---:|\n| near_duplicate | 1 |\n\n"
                                             "![categories](plots/categories.png)\n")
    (cur / "plots").mkdir()
    (cur / "plots" / "categories.png").write_bytes(_png())

    train = root / "train"
    train.mkdir()
    (train / "training.json").write_text(json.dumps({
        "adapter": "tiny-v1", "base_model": "tiny-random-llama", "steps": 4, "epochs": 1.0,
        "data": {"train": {"kept": 18}}, "timings": {"fit_s": 3.0}, "tokens_per_s": 100.0,
        "loss": {"first": 2.5, "final": 1.5, "val_final": 1.7, "train_curve": [[1, 2.5], [2, 2.0], [3, 1.7], [4, 1.5]],
                 "val_curve": [[2, 1.9], [4, 1.7]]}}))
    _jsonl(train / TrainingFiles.PREVIEW, [{"example_id": "ex-0", "spans": [
        {"text": "<|im_start|>user\nWhat does Ana feel?<|im_end|>\n<|im_start|>assistant\n", "trained": False},
        {"text": '{"reasoning": "She lost it.", "answer": "Sadness"}<|im_end|>', "trained": True}]}])

    evaluate = root / "evaluate"
    evaluate.mkdir()
    preds = []
    for qid, base_answer, adapter_answer in (("1", "B", "B"), ("2", "A", "C"), ("3", None, "A")):
        for adapter, answer in ((None, base_answer), ("tiny-v1", adapter_answer)):
            reply = f'{{"answer": "{answer}"}}' if answer else f"I cannot decide {PAYLOAD}"
            preds.append(Prediction(
                model="tiny" + (f"+{adapter}" if adapter else ""), base_model="tiny", adapter=adapter,
                protocol="official", language="en", task="EA", qid=qid, rotation=0, response=reply,
                answer=answer, parsed=answer is not None, correct=answer == "B", lenient_answer=answer,
                lenient_parsed=answer is not None, lenient_correct=answer == "B", gold="B",
                prompts={"answer": [{"role": "system", "content": "# Instructions"},
                                    {"role": "user", "content": f"## Scenario\nItem {qid}"}]}))
    preds.append(Prediction(model="tiny", base_model="tiny", protocol="official", language="en", task="EU", qid="9",
                            rotation=0, response="{}", answer=EUAnswer(emotion="A"), parsed=False, correct=False,
                            gold=EUAnswer(emotion="A", cause="B")))
    _jsonl(evaluate / EvaluationFiles.PREDICTIONS, [p.model_dump(mode="json") for p in preds])
    (evaluate / EvaluationFiles.TABLE_CSV).write_text("protocol,language,model,EA/overall\nofficial,en,tiny,0.333\n"
                                        "official,en,tiny+tiny-v1,0.333\n")
    (evaluate / EvaluationFiles.RESULTS).write_text("{}")
    (evaluate / EvaluationFiles.CHART).write_bytes(_png())
    (root / CHAIN_SUMMARY).write_text(json.dumps({"output": str(root), "seconds": 42.0, "stages": {
        "generate": {"stage": "generate", "output": str(gen), "headline": "9 dialogues ok, 3 failed", "seconds": 20.0}}}))
    (root / "notes.log").write_text("not served")
    return root


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("viewer") / "run")


@pytest.fixture(scope="module")
def client(run_folder: Path) -> TestClient:
    return TestClient(build_app(str(run_folder)))


def test_the_overview_finds_every_stage(client: TestClient) -> None:
    run = client.get("/api/run").json()
    assert [s["kind"] for s in run["stages"]] == ["generate", "curate", "train", "evaluate"]
    assert run["generate"][0]["written"] == DIALOGUES and run["generate"][0]["progress"]["state"] == "done"
    assert run["curate"][0]["plots"] == ["curate/plots/categories.png"]
    assert run["train"][0]["record"]["loss_final"] == 1.5


def test_dialogues_page_in_order_and_newest_first(client: TestClient) -> None:
    first = client.get("/api/dialogues", params={"limit": 5}).json()
    assert first["total"] == DIALOGUES and len(first["rows"]) == 5
    rest = client.get("/api/dialogues", params={"offset": 5, "limit": 50}).json()
    ids = [r["id"] for r in first["rows"] + rest["rows"]]
    assert len(ids) == len(set(ids)) == DIALOGUES
    newest = client.get("/api/dialogues", params={"newest": True, "limit": 50}).json()
    assert [r["id"] for r in newest["rows"]] == ids[::-1]  # b-001.parquet is the newer file
    assert client.get("/api/dialogues", params={"offset": 50}).json()["rows"] == []


def test_dialogue_filters(client: TestClient) -> None:
    failed = client.get("/api/dialogues", params={"status": "failed"}).json()
    assert len(failed["rows"]) == FAILED and {r["status"] for r in failed["rows"]} == {"failed"}
    assert client.get("/api/dialogues/count", params={"status": "failed"}).json() == {
        "count": FAILED, "exact": True, "scanned_rows": DIALOGUES, "total_rows": DIALOGUES}
    by_reason = client.get("/api/dialogues", params={"error": "turn: invalid_json"}).json()
    assert len(by_reason["rows"]) == FAILED
    facets = client.get("/api/dialogues/facets").json()
    assert facets["status"] == {"ok": DIALOGUES - FAILED, "failed": FAILED}
    assert facets["error"] == {"turn: invalid_json": FAILED}
    fine = next(iter(facets["eu"]))
    with_fine = client.get("/api/dialogues", params={"eu": fine}).json()["rows"]
    assert with_fine and all(fine in r["eu"] for r in with_fine)
    assert len(with_fine) == sum(fine in r["eu"] for r in client.get("/api/dialogues").json()["rows"])
    coarse = queries.FINE_TO_COARSE[fine]
    with_coarse = client.get("/api/dialogues", params={"eu": coarse}).json()["rows"]
    assert with_coarse and all(any(queries.FINE_TO_COARSE[x] == coarse for x in r["eu"]) for r in with_coarse)
    ea = next(iter(facets["ea"]))
    with_ea = client.get("/api/dialogues", params={"ea": ea}).json()["rows"]
    assert len(with_ea) == facets["ea"][ea] > 0 and all(ea in r["ea"] for r in with_ea)
    theme = next(iter(facets["theme"]))
    with_theme = client.get("/api/dialogues", params={"theme": theme}).json()["rows"]
    assert len(with_theme) == facets["theme"][theme] > 0 and all(r["theme"] == theme for r in with_theme)
    found = client.get("/api/dialogues", params={"q": "ONERROR"}).json()  # any case, in turns and persona
    assert len(found["rows"]) == 1 and PAYLOAD in found["rows"][0]["persona"]
    assert client.get("/api/dialogues", params={"q": "no such words anywhere"}).json()["rows"] == []


def test_one_dialogue_in_full(client: TestClient) -> None:
    listed = client.get("/api/dialogues", params={"q": "onerror"}).json()["rows"][0]
    d = client.get("/api/dialogue", params={"id": listed["id"]}).json()
    assert d["dialogue"]["turns"][1]["text"] == f"I said {PAYLOAD} to them."
    assert d["eu"][0]["provenance"]["turn_indices"] == [0, 1] and len(d["ea"]) >= 1
    assert client.get("/api/dialogue", params={"id": "nope"}).status_code == 404


def test_each_dialogue_carries_its_crisis_safety_record(client: TestClient) -> None:
    rows = client.get("/api/dialogues", params={"limit": 50}).json()["rows"]
    summaries = [r["safety"] for r in rows if r["status"] == "ok"]
    assert len(summaries) == DIALOGUES - FAILED and all(s is not None for s in summaries)
    risky = [r for r in rows if r["safety"] and r["safety"]["client_risk"] != "none"]
    assert [r["safety"] for r in risky] == [{"client_risk": "high", "handling": "unsafe"}]
    record = client.get("/api/dialogue", params={"id": risky[0]["id"]}).json()["metadata"]["safety"]
    (turn,) = record["risk_turns"]
    assert turn["evidence"][0]["text"] and turn["handling"]["safe"] is False and not turn["handling"]["acknowledged"]


def test_a_dialogue_is_found_without_having_been_listed(run_folder: Path) -> None:
    c = TestClient(build_app(str(run_folder)))
    ids = [r["id"] for r in TestClient(build_app(str(run_folder))).get("/api/dialogues").json()["rows"]]
    assert c.get("/api/dialogue", params={"id": ids[-1]}).json()["id"] == ids[-1]


def test_results_files_still_being_written_are_skipped(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(queries, "LISTING_TTL_S", 0.0)
    root = make_run(tmp_path / "live")
    results = root / "generate" / GenerationFiles.RESULTS
    (results / "c-002.parquet").write_bytes(b"")  # created, nothing written yet
    whole = (results / "a-000.parquet").read_bytes()
    (results / "d-003.parquet").write_bytes(whole[: len(whole) // 2])  # footer not yet written
    c = TestClient(build_app(str(root)))
    assert c.get("/api/dialogues", params={"limit": 100}).json()["total"] == DIALOGUES
    assert c.get("/api/dialogues/count", params={"status": "ok"}).json()["count"] == DIALOGUES - FAILED
    assert c.get("/api/progress").json()["written"] == DIALOGUES
    (results / "d-003.parquet").write_bytes(whole)  # its writer finished it
    os.utime(results / "d-003.parquet", (2.1e9, 2.1e9))
    assert c.get("/api/dialogues", params={"limit": 100}).json()["total"] == DIALOGUES + 8


@pytest.mark.parametrize("path", ["../secret.json", "/etc/passwd", "curate/../../secret.json", "%2e%2e/secret.json",
                                  "curate/%2e%2e/%2e%2e/secret.json", "..%2fsecret.json", "curate\\..\\..\\secret.json",
                                  "./chain.json", "curate//stats.json", "notes.log", "link-out.json", "file:///etc/passwd",
                                  "curate/plots", ""])
def test_paths_outside_the_run_or_not_its_files_are_refused(run_folder: Path, client: TestClient, path: str) -> None:
    (run_folder.parent / "secret.json").write_text('{"secret": 1}')
    if not (run_folder / "link-out.json").exists():
        (run_folder / "link-out.json").symlink_to(run_folder.parent / "secret.json")
    response = client.get("/api/file", params={"path": path})
    assert response.status_code in (404, 422) and "secret" not in response.text
    raw = client.get("/api/file?path=" + path.replace("%", "%25"))  # the same, encoded once more
    assert raw.status_code in (404, 422) and "secret" not in raw.text


def test_the_run_files_are_served_as_data_never_as_markup(client: TestClient) -> None:
    png = client.get("/api/file", params={"path": "curate/plots/categories.png"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    card = client.get("/api/file", params={"path": "curate/DATACARD.md"})
    assert card.headers["content-type"].startswith("text/plain") and card.headers["x-content-type-options"] == "nosniff"
    page = client.get("/")
    assert "script-src 'self'" in page.headers["content-security-policy"] and "unsafe-inline" not in page.headers[
        "content-security-policy"]
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/api/dialogues", params={"stage": "../generate"}).status_code == 404
    assert client.get("/api/dialogues", params={"limit": 100000}).status_code == 422


def test_the_token_guards_every_request(run_folder: Path) -> None:
    c = TestClient(build_app(str(run_folder), token="s3cret"), follow_redirects=False)
    for path in ("/", "/api/run", "/static/app.js", "/api/file?path=curate/DATACARD.md"):
        assert c.get(path).status_code == 401
    assert c.get("/api/run", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/run", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    first = c.get("/?token=s3cret")
    assert first.status_code == 303 and first.headers["location"] == "/" and "token" not in first.headers["location"]
    assert TOKEN_COOKIE in first.cookies
    c.cookies.set(TOKEN_COOKIE, first.cookies[TOKEN_COOKIE])
    assert c.get("/api/run").status_code == 200


@pytest.mark.parametrize("path, own", [("//evil.example/", "/evil.example/"), ("/\\evil.example/", "/%5Cevil.example/"),
                                       ("///evil.example/x", "/evil.example/x"), ("/api/run", "/api/run")])
def test_the_token_redirect_stays_on_this_server(run_folder: Path, path: str, own: str) -> None:
    c = TestClient(build_app(str(run_folder), token="s3cret"), follow_redirects=False)
    first = c.get(f"http://testserver{path}?token=s3cret&x=1")
    assert first.status_code == 303 and first.headers["location"] == f"{own}?x=1"


def test_the_serve_viewer_checks_hosts_and_warns_when_open_without_a_token(run_folder: Path, caplog) -> None:
    from ec2er.viewer.serve import guarded_app

    def ours() -> list[str]:  # the viewer's own records (an HTTP client's logging may be captured too)
        return [r.getMessage() for r in caplog.records if r.name.startswith("ec2er")]

    with caplog.at_level("WARNING", logger="ec2er.viewer.serve"):
        local = TestClient(guarded_app(str(run_folder), None, "127.0.0.1"), base_url="http://127.0.0.1:8000")
        assert local.get("/api/run").status_code == 200
        assert local.get("/api/run", headers={"Host": "evil.example:8000"}).status_code == 400
        assert not ours()
        TestClient(guarded_app(str(run_folder), "s3cret", "0.0.0.0"))
        assert not ours()
        open_proxy = TestClient(guarded_app(str(run_folder), None, "0.0.0.0"))
    assert open_proxy.get("/api/run", headers={"Host": "viewer.example"}).status_code == 200
    assert len(ours()) == 1 and "0.0.0.0" in ours()[0] and "no token" in ours()[0]


def test_damaged_records_are_shown_as_damaged_naming_the_file(tmp_path: Path) -> None:
    root = make_run(tmp_path / "damaged-records")
    (root / "train" / "training.json").write_text('{"adapter": "tiny-v1", ')
    (root / "curate" / CuratedFiles.STATS).write_text("[1, 2")
    c = TestClient(build_app(str(root)))
    training = c.get("/api/training").json()
    assert training["record"] is None and training["damaged"].startswith("train/training.json: damaged: invalid JSON")
    stages = {s["kind"]: s["damaged"] for s in c.get("/api/run").json()["stages"]}
    assert stages["train"] == [training["damaged"]] and stages["generate"] == stages["evaluate"] == []
    assert stages["curate"] == ["curate/stats.json: damaged: invalid JSON (Expecting ',' delimiter: column 6) at line 1"]
    assert c.get("/api/run").json()["train"][0]["damaged"] == training["damaged"]


def test_a_null_field_of_a_prediction_is_no_server_error(tmp_path: Path) -> None:
    root = make_run(tmp_path / "nulls")
    predictions = root / "evaluate" / EvaluationFiles.PREDICTIONS
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    rows[0]["rotation"] = None  # the benchmark's own order, as 0 is: one group with the adapter's reply
    rows[2]["language"] = None
    rows.append(rows[1] | {"rotation": 1})
    _jsonl(predictions, [*rows, [1, 2]])
    c = TestClient(build_app(str(root)))
    e = c.get("/api/evaluation")
    assert e.status_code == 200 and e.json()["items"] == 6
    assert {b["model"]: b["n"] for b in e.json()["bars"] if b["task"] == "EA" and b["language"] == "en"} == {
        "tiny": 2, "tiny+tiny-v1": 3}
    page = c.get("/api/predictions", params={"limit": 200})
    assert page.status_code == 200 and [g["rotation"] for g in page.json()["rows"]].count(1) == 1


def test_other_host_names_are_refused_on_loopback(run_folder: Path) -> None:
    from ec2er.viewer.cli import allowed_hosts

    c = TestClient(build_app(str(run_folder), allowed_hosts=allowed_hosts("127.0.0.1")), base_url="http://127.0.0.1:8765")
    assert c.get("/api/run").status_code == 200
    assert c.get("/api/run", headers={"Host": "evil.example:8765"}).status_code == 400
    assert allowed_hosts("0.0.0.0") is None


def test_curation_decisions_duplicates_and_benchmark_matches(client: TestClient) -> None:
    page = client.get("/api/curation").json()
    assert page["total"] == 25 and [r["decision"] for r in page["rows"]][:1] == ["train"]
    rejected = client.get("/api/curation", params={"decision": "rejected"}).json()["rows"]
    assert [r["reasons"][0]["code"] for r in rejected] == ["near_duplicate", "benchmark_contamination", "scenario_length"]
    assert rejected[0]["matches"][0]["scenario"]
    only = client.get("/api/curation", params={"reason": "benchmark_contamination"}).json()["rows"]
    assert len(only) == 1 and only[0]["matches"][0]["ref"] == "EU.jsonl:en:7"
    bench = client.get("/api/curation/benchmark", params={"ref": "EU.jsonl:en:7"}).json()
    assert bench["item"]["scenario"] == "Benchmark scenario about a lost dog."
    assert client.get("/api/curation/benchmark", params={"ref": "../../etc/passwd:en:1"}).status_code == 404
    paged = client.get("/api/curation", params={"offset": 20, "limit": 10}).json()["rows"]
    assert [r["decision"] for r in paged] == ["val", "val", "rejected", "rejected", "rejected"]
    eu_only = client.get("/api/curation", params={"task": "EU"}).json()["rows"]
    assert eu_only and {r["task"] for r in eu_only} == {"EU"}


def test_training_and_evaluation_views(client: TestClient) -> None:
    t = client.get("/api/training").json()
    assert t["curves"]["train"][-1] == [4, 1.5] and t["preview"][0]["spans"][1]["trained"] is True
    e = client.get("/api/evaluation").json()
    bars = {(b["model"], b["task"]): b for b in e["bars"]}
    assert bars[("tiny", "EA")]["unparsed"] == pytest.approx(1 / 3) and bars[("tiny", "EU")]["unparsed"] == 1.0
    assert e["items"] == 4 and e["disagree"] == 2
    disagree = client.get("/api/predictions", params={"disagree": True}).json()
    assert [g["qid"] for g in disagree["rows"]] == ["2", "3"]
    group = disagree["rows"][0]
    assert [p["model"] for p in group["predictions"]] == ["tiny", "tiny+tiny-v1"] and group["gold"] == "B"
    assert group["predictions"][0]["prompts"]["answer"][1]["content"].endswith("Item 2")
    assert [g["qid"] for g in client.get("/api/predictions", params={"unparsed": True}).json()["rows"]] == ["3", "9"]


def test_bad_requests_get_4xx_and_the_server_keeps_serving(client: TestClient) -> None:
    assert client.get("/api/dialogues", params={"offset": -1}).status_code == 422
    assert client.get("/api/dialogue").status_code == 422
    assert client.get("/api/training", params={"stage": "evaluate"}).status_code == 404
    assert client.get("/api/run").status_code == 200


def test_a_single_stage_folder_is_a_run_too(run_folder: Path) -> None:
    c = TestClient(build_app(str(run_folder / "generate")))
    assert [s["kind"] for s in c.get("/api/run").json()["stages"]] == ["generate"]
    assert c.get("/api/dialogues").json()["total"] == DIALOGUES
    assert c.get("/api/curation").status_code == 404


def test_ec2er_view_names_a_missing_folder_in_one_line(tmp_path: Path, capsys) -> None:
    from ec2er.cli import main

    assert main(["view", str(tmp_path / "nope")]) == 2
    assert "nope: not a folder" in capsys.readouterr().err


def test_the_ray_serve_application_builds(run_folder: Path) -> None:
    from ray.serve import Application

    from ec2er.viewer.serve import app_builder

    assert isinstance(app_builder({"run": str(run_folder)}), Application)
    with pytest.raises(ValueError):
        app_builder({})


def test_a_damaged_results_file_is_named_and_the_server_keeps_serving(tmp_path: Path) -> None:
    root = make_run(tmp_path / "damaged")
    damaged = root / "generate" / GenerationFiles.RESULTS / "a-000.parquet"
    data = bytearray(damaged.read_bytes())
    data[100:4000] = bytes(3900)  # its footer intact, its pages not
    damaged.write_bytes(bytes(data))
    c = TestClient(build_app(str(root)), raise_server_exceptions=False)
    response = c.get("/api/dialogues")
    assert response.status_code == 500 and response.json()["detail"].startswith("a file of the run could not be read")
    assert c.get("/api/run").status_code == 200 and c.get("/api/curation").status_code == 200


def test_the_page_works_under_a_route_prefix(run_folder: Path) -> None:
    """Mounted beside the model endpoint (a Serve route prefix), the page asks for its script and
    its data under that prefix."""
    c = TestClient(build_app(str(run_folder)), root_path="/viewer")
    page = c.get("/viewer/").text
    assert '<meta name="ec2er-base" content="/viewer/">' in page and 'src="/viewer/static/app.js"' in page
    assert c.get("/viewer/api/run").status_code == 200 and c.get("/viewer/static/app.js").status_code == 200
