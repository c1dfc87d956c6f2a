"""Generation stage, fast tests: planning, personas, themes, the turn-synchronous loop, the
extraction schemas, outputs and crash-safe resume. The engine is an in-process fake
(``FakeEngine``, a ChatEngine implementing ``_complete``) so these run in seconds; the
end-to-end runs on vLLM and Ray are in test_generation_slow.py."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from ec2er.config import EngineConfig, load_config
from ec2er.errors import ConfigError, DataError
from ec2er.generation.agents import SupervisorCheck, TokenBudget
from ec2er.generation.agents.base import SESSION_CONTEXT, chars_estimate
from ec2er.generation.config import GenerateConfig, RayConfig
from ec2er.generation.dialogue_loop import DialogueLoop
from ec2er.generation.extraction import EADraft, EUDraft, ea_item, eu_item
from ec2er.generation.outputs import RunOutputs
from ec2er.generation.personas import read_persona_file, sample_personas
from ec2er.generation.plan import plan_dialogues
from ec2er.generation.themes import compatible, load_themes
from ec2er.io import read_jsonl
from ec2er.llm import ChatEngine, ChatRequest, GenerationError, RawCompletion
from ec2er.schemas import EAItem, EUItem, parse_item
from ec2er.schemas.dialogue import Speaker
from ec2er.schemas.items import Provenance
from ec2er.schemas.persona import Persona
from ec2er.schemas.taxonomy import EMOTIONS, EACategory, EAQuestionType, EUFineCategory
from ec2er.validate import validate_files

REPO = Path(__file__).resolve().parents[1]
TURN_LINE = re.compile(r"^\[(\d+)\] ", re.MULTILINE)


class FakeEngine(ChatEngine):
    """Deterministic answers derived from each request's content and seed. The supervisor's
    verdict is all-met once the transcript has ``all_met_at`` turns (never when None)."""

    def __init__(self, all_met_at: int | None = 6, delay: float = 0.0,
                 fail: Callable[[ChatRequest], bool] = lambda r: False,
                 duplicate: Callable[[ChatRequest], bool] = lambda r: False):
        self.model_name = "fake"
        self.max_reasks = 0
        self.all_met_at, self.delay, self.fail, self.duplicate = all_met_at, delay, fail, duplicate
        self.calls: list[list[ChatRequest]] = []

    def _complete(self, requests):
        self.calls.append(list(requests))
        time.sleep(self.delay)
        return [self._one(r) for r in requests]

    def _one(self, r: ChatRequest) -> RawCompletion:
        if self.fail(r):
            return RawCompletion("", error=GenerationError(kind="engine", message="boom"))
        h = hashlib.sha256((json.dumps(r.messages) + str(r.sampling.seed)).encode()).hexdigest()
        k = int(h[:6], 16)
        model = r.response_model
        if model is None:
            text = f"Words {h[:10]} about the situation."
        elif model is SupervisorCheck:
            n = len(TURN_LINE.findall(r.messages[-1]["content"]))
            met = self.all_met_at is not None and n >= self.all_met_at
            text = json.dumps({"reason": f"{n} turns", "scenario_clear": met, "emotions_present": met,
                               "causes_present": met, "dilemma_present": met, "rich_enough": met})
        elif model is EUDraft:
            wrong = [EMOTIONS[(k + i * 7) % len(EMOTIONS)] for i in range(1, 6)]
            causes = [f"cause {i} {h[i:i + 4]}" for i in range(4 + k % 3)]
            if self.duplicate(r):
                causes = [causes[0]] * len(causes)
            text = json.dumps({"scenario": f"Someone faced a hard moment {h[:8]} at home.", "subject": "Ana",
                               "correct_emotion": EMOTIONS[k % len(EMOTIONS)], "wrong_emotions": wrong,
                               "correct_cause": causes[0], "wrong_causes": causes[1:],
                               "explanation": "Because of what happened before.", "evidence_turns": [0, 1]})
        else:
            text = json.dumps({"scenario": f"Someone must decide {h[:8]} what to do.", "subject": "Ana",
                               "best_choice": f"option 0 {h[:4]}",
                               "worse_choices": [f"option {i} {h[i:i + 4]}" for i in range(1, 4)],
                               "explanation": "It addresses the need directly."})
        return RawCompletion(text, prompt_tokens=sum(len(m["content"]) for m in r.messages) // 4,
                             completion_tokens=len(text) // 4, finish_reason="stop")


def make_config(n: int = 4, pipeline: str = "mads", **updates) -> GenerateConfig:
    data = {"pipeline": pipeline, "num_dialogues": n, "seed": 3,
            "engine": EngineConfig(model="fake", max_model_len=4096).model_dump(),
            "ray": RayConfig(executor="local", batch_size=4).model_dump()}
    if pipeline == "concise":
        data["turns"] = {"min_turns": 10, "max_turns": 10}
    data.update(updates)
    return GenerateConfig.model_validate(data)


def kinds_of(call: list[ChatRequest]) -> Counter:
    """What each request of one engine call was for."""
    out: Counter = Counter()
    for r in call:
        if r.response_model is not None:
            out[r.response_model.__name__] += 1
        elif "novelist" in r.messages[0]["content"] or "backgrounds" in r.messages[0]["content"]:
            out["background"] += 1
        else:
            out["turn"] += 1
    return out


# ---------------------------------------------------------------- personas, themes, plan

def test_sampler_streams_distinct_reproducible_personas():
    first = [p for _, p in zip(range(400), sample_personas(1))]
    again = [p for _, p in zip(range(400), sample_personas(1))]
    other = [p for _, p in zip(range(400), sample_personas(2))]
    assert first == again and first != other
    assert len({p.description for p in first}) == 400 == len({p.persona_id for p in first})
    assert all(18 <= p.age <= 75 for p in first)
    assert not [p for p in first if p.occupation == "retiree" and p.age < 60]
    assert len({p.cultural_background for p in first}) > 20 and len({p.disposition for p in first}) == 6


def test_persona_files_personahub_jsonl_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = tmp_path / "persona.jsonl"
    jsonl.write_text('{"persona": "A retired sailor who paints seascapes."}\n'
                     '{"persona": "A 24-year-old nurse on night shifts."}\n', encoding="utf-8")
    people = list(read_persona_file(jsonl))
    assert [p.age for p in people] == [68, 24]
    assert people[0].persona_id == list(read_persona_file(jsonl))[0].persona_id
    pq.write_table(pa.table({"text": ["A student of physics.", ""]}), tmp_path / "p.parquet")
    assert [p.description for p in read_persona_file(tmp_path / "p.parquet", "text")] == ["A student of physics."]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"persona": "ok"}\n{"name": "no persona"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:2: no non-empty 'persona'"):
        list(read_persona_file(bad))
    with pytest.raises(DataError, match="no column 'persona'"):
        list(read_persona_file(tmp_path / "p.parquet"))


def test_themes_file_and_compatibility(tmp_path):
    themes = load_themes()
    assert len(themes) == 90 and Counter(t.category.value for t in themes) == {
        c: 15 for c in ("Professional", "Education", "Family", "Relationships", "Health", "Financial")}
    assert all(t.description and t.keywords for t in themes)
    by_id = {t.theme_id: t for t in themes}
    student = Persona(persona_id="x", description="A 19-year-old student.", age=19)
    assert not compatible(student, by_id["retirement_savings_worry"])
    assert not compatible(student, by_id["retirement_transition"])
    assert compatible(student, by_id["exam_failure"])
    bad = tmp_path / "themes.yaml"
    bad.write_text(yaml.safe_dump({"Health": [{"id": "x", "name": "X", "description": "d", "max_age": 140}]}))
    with pytest.raises(ConfigError, match=r"themes.yaml: Health\[0\]: max_age"):
        load_themes(bad)


def test_plan_is_deterministic_balanced_and_compatible():
    config = make_config(n=24)
    plan = plan_dialogues(config)
    assert [s.model_dump() for s in plan] == [s.model_dump() for s in plan_dialogues(config)]
    assert len({s.dialogue_id for s in plan}) == 24 and len({s.persona.persona_id for s in plan}) == 24
    assert all(compatible(s.persona, s.theme) for s in plan)
    cats = Counter(s.theme.category for s in plan)
    assert len(cats) == 6 and max(cats.values()) - min(cats.values()) <= 1
    eu = Counter(t.fine for s in plan for t in s.targets if t.fine)
    coarse = Counter(str(f) for f in eu)  # each fine category is used
    assert len(coarse) == 11
    ea = Counter(t.category for s in plan for t in s.targets if t.category)
    assert max(ea.values()) - min(ea.values()) <= 1
    qids = [t.qid for s in plan for t in s.targets]
    assert len(set(qids)) == len(qids) and all(q.startswith("mads-s3-") for q in qids)


def test_concise_plan_samples_attributes():
    plan = plan_dialogues(make_config(n=5, pipeline="concise",
                                      items={"eu_min": 2, "eu_max": 2, "ea_min": 2, "ea_max": 2}))
    assert all(s.attributes is not None and s.theme is None and len(s.targets) == 4 for s in plan)


def test_config_errors_name_file_and_key(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("pipeline: concise\nnum_dialogues: 2\nturns: {max_turns: 12}\n")
    with pytest.raises(ConfigError, match="g.yaml"):
        load_config(path, GenerateConfig)
    path.write_text("pipeline: mads\nnum_dialogues: 2\nengine: {modle: x}\n")
    with pytest.raises(ConfigError, match=r"g.yaml: engine.modle: unknown key"):
        load_config(path, GenerateConfig)
    for recipe in ("mads", "mads-tiny", "concise", "concise-tiny"):
        load_config(REPO / "pipelines" / f"{recipe}.yaml", GenerateConfig)


# ---------------------------------------------------------------- the dialogue loop

def test_one_batched_call_per_step_and_supervisor_cadence():
    config = make_config(n=3)
    engine = FakeEngine(all_met_at=None)  # never satisfied: runs to max_turns
    results = DialogueLoop(engine, config).run(plan_dialogues(config))
    assert [r.metadata["turns"] for r in results] == [14] * 3
    assert all(r.metadata["stop_reason"] == "max_turns" for r in results)
    # steps: background, 14 turns, supervisor after turns 4, 6, 8, 10, 12, extraction
    assert len(engine.calls) == 1 + 14 + 5 + 1
    steps = [kinds_of(c) for c in engine.calls]
    assert steps[0] == {"background": 3}
    sup_after = [sum(s["turn"] for s in steps[:i]) // 3 for i, s in enumerate(steps) if s["SupervisorCheck"]]
    assert sup_after == [4, 6, 8, 10, 12]
    assert all(sum(s.values()) == 3 for s in steps[:-1])  # one request per dialogue per step
    assert results[0].dialogue.turns[0].speaker is Speaker.CLIENT
    assert results[0].dialogue.turns[1].speaker is Speaker.THERAPIST


@pytest.mark.parametrize("met_at, turns", [(0, 4), (6, 6), (7, 8)])
def test_stops_when_all_met_never_before_min(met_at, turns):
    config = make_config(n=2)
    results = DialogueLoop(FakeEngine(all_met_at=met_at), config).run(plan_dialogues(config))
    assert [r.metadata["turns"] for r in results] == [turns, turns]
    assert all(r.metadata["stop_reason"] == "all_met" for r in results)
    assert results[0].metadata["verdicts"][-1]["scenario_clear"] is True


def test_finished_dialogues_drop_out_and_failures_are_recorded():
    config = make_config(n=4)
    plan = plan_dialogues(config)
    doomed = plan[1].persona.description
    engine = FakeEngine(
        all_met_at=None,
        fail=lambda r: r.response_model is None and doomed in r.messages[-1]["content"] and "novelist" in r.messages[0]["content"],
        duplicate=lambda r: r.sampling.seed % 2 == 0)
    results = DialogueLoop(engine, config).run(plan)
    failed = results[1].metadata
    assert failed["status"] == "failed" and failed["error"].startswith("background: engine: boom")
    assert results[1].dialogue is None and results[1].eu == []
    assert kinds_of(engine.calls[1]) == {"turn": 3}  # the failed dialogue dropped out
    ok = [r for r in results if r.metadata["status"] == "ok"]
    dups = [f for r in ok for f in r.metadata["item_failures"]]
    assert dups and all(f["error"].startswith("invalid: wrong_causes: only 0 distinct wrong options") for f in dups)
    for r in ok:
        assert len(r.eu) + len(r.ea) + len(r.metadata["item_failures"]) == len(plan[r.metadata["index"]].targets)
        for row in r.eu + r.ea:
            parse_item(row)


def test_an_empty_turn_fails_its_dialogue():
    config = make_config(n=2)
    engine = FakeEngine()
    one = engine._one
    specs = plan_dialogues(config)
    first_background = DialogueLoop(FakeEngine(), config).run(specs[:1])[0].dialogue.background
    # the first dialogue's first 4-message turn prompt gets a blank reply; the other dialogue is untouched
    engine._one = lambda r: (RawCompletion("  ", finish_reason="stop")
                             if r.response_model is None and len(r.messages) == 4
                             and first_background in r.messages[0]["content"] else one(r))
    failed, ok = DialogueLoop(engine, config).run(specs)
    assert failed.metadata["status"] == "failed" and failed.metadata["error"] == "turn: empty"
    assert failed.dialogue is None and not failed.eu and ok.metadata["status"] == "ok"

def test_concise_runs_ten_messages_without_supervisor():
    config = make_config(n=2, pipeline="concise")
    engine = FakeEngine()
    results = DialogueLoop(engine, config).run(plan_dialogues(config))
    assert [r.metadata["turns"] for r in results] == [10, 10]
    assert not any(kinds_of(c)["SupervisorCheck"] for c in engine.calls)
    assert "condensed background" in engine.calls[0][0].messages[-1]["content"]


def test_prompts_stay_within_max_model_len():
    config = make_config(n=1, engine={"model": "fake", "max_model_len": 700},
                         sampling={"turn": {"max_tokens": 100}, "background": {"max_tokens": 100},
                                   "supervisor": {"max_tokens": 100}, "extraction": {"max_tokens": 200}})
    engine = FakeEngine(all_met_at=None)
    long_text = "a long reply that keeps going " * 20

    def long_turns(requests):
        engine.calls.append(list(requests))
        return [RawCompletion(long_text) if r.response_model is None else FakeEngine._one(engine, r)
                for r in requests]

    engine._complete = long_turns
    results = DialogueLoop(engine, config).run(plan_dialogues(config))
    budget = TokenBudget(700, chars_estimate)
    for call in engine.calls:
        for r in call:
            assert budget.messages_tokens(r.messages) <= 700 - r.sampling.max_tokens
    assert results[0].metadata["turns"] == 14
    last_turn = [c for c in engine.calls if kinds_of(c)["turn"]][-1][0]
    assert last_turn.messages[0]["role"] == "system" and long_text.strip() in last_turn.messages[0]["content"]



def test_agent_prompts_are_prefix_cache_friendly():
    """Both agents open with the same background text, and each agent's next request extends
    its previous one, so an engine's prefix cache serves all but the newest messages."""
    config = make_config(n=1)
    engine = FakeEngine(all_met_at=None)
    [result] = DialogueLoop(engine, config).run(plan_dialogues(config))
    shared = SESSION_CONTEXT.system_text(background=result.dialogue.background)
    turns = [c[0] for c in engine.calls if kinds_of(c)["turn"]]
    assert len(turns) == 14 and all(r.messages[0]["content"].startswith(shared) for r in turns)
    for agent_requests in (turns[0::2], turns[1::2]):  # client, therapist
        for before, after in zip(agent_requests, agent_requests[1:]):
            # all but the newest message: the therapist's phase note rides on it
            assert after.messages[:len(before.messages) - 1] == before.messages[:-1]
    therapist = turns[1::2]
    assert [r.messages[-1]["content"].rsplit("[Phase of your reply: ", 1)[1][:8] for r in therapist] == \
        ["clarify:"] * 2 + ["explore "] + ["perspect"] * 2 + ["options:"] * 2  # turns 1, 3, ..., 13 of 14

# ---------------------------------------------------------------- extraction schemas

def test_extraction_schemas_constrain_what_a_model_can_write():
    eu = EUDraft.model_json_schema()
    props = eu["properties"]
    assert props["wrong_emotions"]["minItems"] == props["wrong_emotions"]["maxItems"] == 5
    assert eu["$defs"]["EmotionLabel"]["enum"] == list(EMOTIONS)
    assert props["correct_emotion"] == {"$ref": "#/$defs/EmotionLabel"}
    assert (props["wrong_causes"]["minItems"], props["wrong_causes"]["maxItems"]) == (3, 5)
    assert all("maxLength" in props[k] for k in ("scenario", "subject", "explanation", "correct_cause"))
    ea = EADraft.model_json_schema()["properties"]
    assert (ea["worse_choices"]["minItems"], ea["worse_choices"]["maxItems"]) == (3, 5)
    assert "category" not in props and "category" not in ea  # assigned by the balancer


def test_drafts_convert_to_valid_items_with_shuffled_gold():
    prov = Provenance(pipeline="mads", dialogue_id="d", generator_model="m", prompt_version="x@1")
    draft = EUDraft(scenario="Ana hears her team won while she was away.", subject="Ana",
                    correct_emotion="Pride", wrong_emotions=["Joy", "Anger", "Fear", "Guilt", "Relief"],
                    correct_cause="the win", wrong_causes=["the rain", "a debt", "a cold"],
                    explanation="She missed it.", evidence_turns=[1, 9])
    item = eu_item(draft, "d-eu0", EUFineCategory.faux_pas, prov, n_turns=6)
    assert isinstance(item, EUItem) and item.emotion_label == "Pride" and item.cause_label == "the win"
    assert sorted(item.emotion_choices) == ["Anger", "Fear", "Guilt", "Joy", "Pride", "Relief"]
    assert item.coarse_category.value == "perspective_taking" and item.provenance.turn_indices == [1]
    assert eu_item(draft, "d-eu0", EUFineCategory.faux_pas, prov, 6) == item  # seeded by qid
    with pytest.raises(ValueError, match="only 1 distinct wrong options"):
        eu_item(draft.model_copy(update={"wrong_causes": ["The  win", "x y", "X y"]}),
                "q", EUFineCategory.persona, prov, 6)
    ea = EADraft(scenario="Ana must answer her friend about the party.", subject="Ana", best_choice="say yes",
                 worse_choices=["say no", "ignore", "Say no", "leave", "shout"], explanation="Honest and kind.")
    item = ea_item(ea, "d-ea0", EACategory.social_self, EAQuestionType.response, prov, 6)
    assert isinstance(item, EAItem) and item.label == "say yes" and item.question_type.value == "Response"
    assert sorted(item.choices) == ["ignore", "leave", "say no", "say yes"]


def test_repeated_distractor_emotions_are_replaced_from_the_taxonomy():
    prov = Provenance(pipeline="mads", dialogue_id="d", generator_model="m", prompt_version="x@1")
    draft = EUDraft(scenario="Ana hears her team won while she was away.", subject="Ana",
                    correct_emotion="Joy", wrong_emotions=["Joy", "Anger", "Anger", "Anger", "Fear"],
                    correct_cause="the win", wrong_causes=["the rain", "a debt", "a cold"],
                    explanation="She is glad.")
    item = eu_item(draft, "d-eu1", EUFineCategory.persona, prov, 6)
    assert len(set(item.emotion_choices)) == 6 and {"Joy", "Anger", "Fear"} <= set(item.emotion_choices)
    assert set(item.emotion_choices) <= set(EMOTIONS)


# ---------------------------------------------------------------- outputs and resume

@pytest.fixture
def fake_engine(monkeypatch):
    import ec2er.generation.ray_pipeline as rp

    monkeypatch.setattr(rp, "build_engine", lambda cfg: FakeEngine(all_met_at=6))


def items(out: Path) -> list[dict]:
    return read_jsonl(out / "eu.jsonl") + read_jsonl(out / "ea.jsonl")


def test_cli_generate_writes_valid_outputs(tmp_path, fake_engine, capsys):
    from ec2er.cli import main

    cfg = tmp_path / "g.yaml"
    cfg.write_text(yaml.safe_dump(make_config(n=5).model_dump(mode="json")))
    out = tmp_path / "out"
    assert main(["generate", "--config", str(cfg), "--output", str(out), "--no-progress",
                 "--set", "ray.batch_size=2", "--num-dialogues", "6"]) == 0
    assert "6 dialogues ok" in capsys.readouterr().out
    report = validate_files([out / "eu.jsonl", out / "ea.jsonl"])
    assert report.ok and sum(report.counts.values()) == len(items(out)) > 30
    stats = json.loads((out / "stats.json").read_text())
    assert stats["dialogues"]["ok"] == 6 and sum(stats["distributions"]["eu_coarse"].values()) == len(read_jsonl(out / "eu.jsonl"))
    assert len(read_jsonl(out / "dialogues.jsonl")) == len(read_jsonl(out / "metadata.jsonl")) == 6
    # a rerun into the finished folder does nothing; a different config is refused
    assert main(["generate", "--config", str(cfg), "--output", str(out), "--no-progress",
                 "--num-dialogues", "6"]) == 0
    assert len(read_jsonl(out / "metadata.jsonl")) == 6
    assert main(["generate", "--config", str(cfg), "--output", str(out), "--set", "seed=9"]) == 2
    assert "different config" in capsys.readouterr().err
    # how fast or where the engine runs is no part of the run's identity
    assert main(["generate", "--config", str(cfg), "--output", str(out), "--no-progress", "--num-dialogues", "6",
                 "--set", "engine.kv_cache_gib=4", "--set", "engine.timeout_s=30"]) == 0


def test_concise_writes_final_files(tmp_path, fake_engine):
    from ec2er.generation.driver import run_generation

    config = make_config(n=3, pipeline="concise", items={"eu_min": 2, "eu_max": 2, "ea_min": 2, "ea_max": 2})
    stats = run_generation(config, tmp_path, progress=False)
    assert len(json.loads((tmp_path / "personas_final.json").read_text())) == 3
    assert validate_files([tmp_path / "items_final.jsonl"]).ok
    assert len(read_jsonl(tmp_path / "items_final.jsonl")) == 12
    assert json.loads((tmp_path / "summary.json").read_text())["counts"] == {"personas": 3, "items": 12}
    assert stats["summary"]["items"].endswith("items_final.jsonl")


def test_resume_repairs_torn_and_uncommitted_lines(tmp_path, fake_engine):
    from ec2er.generation.driver import run_generation

    config = make_config(n=6)
    ref = tmp_path / "ref"
    run_generation(config, ref, progress=False)
    out = tmp_path / "crashed"
    run_generation(config.model_copy(update={"num_dialogues": 3}), out, progress=False)
    # a commit killed half-way: an item line of a dialogue without metadata, then a torn line
    stray = dict(read_jsonl(ref / "eu.jsonl")[-1])
    with (out / "eu.jsonl").open("a") as f:
        f.write(json.dumps(stray) + "\n" + '{"qid": "torn')
    with (out / "metadata.jsonl").open("a") as f:
        f.write('{"dialogue_id": "mads-s3-0000')
    run_generation(config, out, progress=False)
    assert sorted(json.dumps(r, sort_keys=True) for r in items(out)) == \
        sorted(json.dumps(r, sort_keys=True) for r in items(ref))
    assert RunOutputs(out, config).prepare() == {f"mads-s3-{i:06d}" for i in range(6)}


def test_kill_9_mid_run_then_resume_gives_the_uninterrupted_items(tmp_path, fake_engine):
    from ec2er.generation.driver import run_generation

    config = make_config(n=12, ray={"executor": "local", "batch_size": 2})
    run_generation(config, tmp_path / "ref", progress=False)
    cfg = tmp_path / "g.yaml"
    cfg.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    out = tmp_path / "killed"
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "import ec2er.generation.ray_pipeline as rp\n"
              "from test_generation import FakeEngine\n"
              "rp.build_engine = lambda cfg: FakeEngine(all_met_at=6, delay=0.15)\n"
              "from ec2er.cli import main\n"
              f"sys.exit(main(['generate', '--config', {str(cfg)!r}, '--output', {str(out)!r}, '--no-progress']))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        meta = out / "metadata.jsonl"
        if meta.exists() and len(meta.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = len((out / "metadata.jsonl").read_text().splitlines())
    assert 3 <= committed < 12
    run_generation(config, out, progress=False)
    ref_ids = sorted(r["qid"] for r in items(tmp_path / "ref"))
    assert sorted(r["qid"] for r in items(out)) == ref_ids and len(set(ref_ids)) == len(ref_ids)
    assert sorted(m["dialogue_id"] for m in read_jsonl(out / "metadata.jsonl")) == \
        [f"mads-s3-{i:06d}" for i in range(12)]
