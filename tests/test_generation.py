"""Generation stage, fast tests: personas, themes, the streaming plan, the dialogue coroutine,
the extraction schemas. The engine is an in-process fake (``tests/fakes.py``) so these run in
seconds; the Ray Data job, resume and actor failures are in test_generation_job.py, real vLLM
engines in test_generation_slow.py."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from fakes import FakeEngine

from ec2er.config import load_config
from ec2er.llm import VLLMEngineConfig
from ec2er.errors import ConfigError, DataError
from ec2er.generation.agents import TokenBudget
from ec2er.generation.agents.base import SESSION_CONTEXT
from ec2er.generation.config import GenerateConfig
from ec2er.generation.dialogue import DialogueRunner
from ec2er.generation.extraction import EADraft, EUDraft, ea_item, eu_item, for_persons
from ec2er.generation.personas import check_persona_file, persona_at, persona_from_text
from ec2er.generation.persons import CLIENT_NAMES, client_name
from ec2er.generation.plan import persona_specs, sampler_specs
from ec2er.generation.themes import compatible, load_themes
from ec2er.llm import RawCompletion
from ec2er.schemas import EAItem, EUItem, parse_item
from ec2er.schemas.dialogue import Speaker
from ec2er.schemas.items import Provenance
from ec2er.schemas.persona import Persona
from ec2er.schemas.taxonomy import (
    EMOTIONS,
    EU_FINE_TO_COARSE,
    EACategory,
    EAQuestionType,
    EUFineCategory,
)

REPO = Path(__file__).resolve().parents[1]


def make_config(n: int = 4, pipeline: str = "mads", **updates) -> GenerateConfig:
    data = {"pipeline": pipeline, "num_dialogues": n, "seed": 3,
            "engine": VLLMEngineConfig(model="fake", max_model_len=4096).model_dump()}
    if pipeline == "concise":
        data["turns"] = {"min_turns": 10, "max_turns": 10}
    data.update(updates)
    return GenerateConfig.model_validate(data)


def run(engine, config, specs):
    """Each dialogue as its own coroutine on the shared engine, all at once."""
    runner = DialogueRunner(engine, config)

    async def main():
        return await asyncio.gather(*(runner.run(s) for s in specs))

    return asyncio.run(main())


def kind(r) -> str:
    if r.response_model is not None:
        return r.response_model.__name__
    if "novelist" in r.messages[0]["content"] or "backgrounds" in r.messages[0]["content"]:
        return "background"
    return "turn"


# ---------------------------------------------------------------- personas, themes, plan

def test_sampler_personas_are_a_function_of_seed_and_row():
    first = [persona_at(1, i) for i in range(400)]
    assert first == [persona_at(1, i) for i in range(400)] and first != [persona_at(2, i) for i in range(400)]
    assert persona_at(1, 399) == first[399]  # any row, drawn alone, is the same persona
    assert len({p.persona_id for p in first}) == 400 and len({p.description for p in first}) > 390
    assert all(18 <= p.age <= 75 for p in first)
    assert not [p for p in first if p.occupation == "retiree" and p.age < 60]
    assert len({p.cultural_background for p in first}) > 20 and len({p.disposition for p in first}) == 6


def test_persona_files_personahub_jsonl_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert persona_from_text("A retired sailor who paints seascapes.", "f").age == 68
    assert persona_from_text("A 24-year-old nurse on night shifts.", "f").age == 24
    assert persona_from_text("  ", "f") is None and persona_from_text(None, "f") is None
    assert persona_from_text("A nurse.", "a").persona_id == persona_from_text("A nurse.", "b").persona_id
    jsonl = tmp_path / "persona.jsonl"
    jsonl.write_text('{"persona": "A retired sailor."}\n', encoding="utf-8")
    check_persona_file(jsonl)
    pq.write_table(pa.table({"text": ["A student of physics.", ""]}), tmp_path / "p.parquet")
    check_persona_file(tmp_path / "p.parquet", "text")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"name": "no persona"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:1: no non-empty 'persona'"):
        check_persona_file(bad)
    with pytest.raises(DataError, match="no column 'persona'"):
        check_persona_file(tmp_path / "p.parquet")


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


def test_sampler_plan_is_per_row_deterministic_balanced_and_compatible():
    config = make_config(n=24)
    plan = sampler_specs(config, range(24))
    assert [s.model_dump() for s in plan] == [s.model_dump() for s in sampler_specs(config, range(24))]
    # a row planned alone, or by another worker among other rows, is the same dialogue
    assert sampler_specs(config, [17])[0] == plan[17] and sampler_specs(config, [5, 17])[1] == plan[17]
    assert len({s.dialogue_id for s in plan}) == 24 and all(compatible(s.persona, s.theme) for s in plan)
    cats = Counter(s.theme.category for s in plan)
    assert len(cats) == 6 and max(cats.values()) - min(cats.values()) <= 1
    themes = Counter(s.theme.theme_id for s in plan)
    assert max(themes.values()) <= 2  # 24 dialogues over 90 themes: spread, not piled up
    eu = Counter(t.fine for s in plan for t in s.targets if t.fine)
    assert len(eu) == 11  # every fine category is used
    # with a fixed number of items per dialogue every category gets the same count; with 3-4
    # (the default) only the random 4th items can tip it
    for items, spread in (({"eu_min": 2, "eu_max": 2, "ea_min": 3, "ea_max": 3}, 0), ({}, 4)):
        targets = [t for s in sampler_specs(make_config(n=24, items=items), range(24)) for t in s.targets]
        coarse = Counter(EU_FINE_TO_COARSE[t.fine] for t in targets if t.fine)
        ea = Counter(t.category for t in targets if t.category)
        assert len(coarse) == len(ea) == 4
        assert max(coarse.values()) - min(coarse.values()) <= spread
        assert max(ea.values()) - min(ea.values()) <= spread
    qtypes = Counter(t.question_type for s in plan for t in s.targets if t.question_type)
    assert max(qtypes.values()) - min(qtypes.values()) <= 4
    qids = [t.qid for s in plan for t in s.targets]
    assert len(set(qids)) == len(qids) and all(q.startswith("mads-s3-") for q in qids)


def test_file_personas_serve_max_reuse_dialogues_with_ids_from_their_text():
    config = make_config(n=4, personas={"source": "file", "path": "x.jsonl", "max_reuse": 3})
    nurse = persona_from_text("A 30-year-old nurse who loves chess.", "x.jsonl")
    specs = persona_specs(config, nurse)
    assert [s.dialogue_id for s in specs] == [f"mads-s3-{nurse.persona_id}-r{j}" for j in range(3)]
    assert persona_specs(config, nurse) == specs and len({s.seed for s in specs}) == 3
    elder = Persona(persona_id="c", description="A person of 99.", age=99)
    schooling = config.model_copy(update={"themes": config.themes.model_copy(update={"categories": ["Education"]})})
    assert persona_specs(schooling, elder) == []  # no theme fits: no dialogue


def test_concise_plan_samples_attributes():
    plan = sampler_specs(make_config(n=5, pipeline="concise",
                                     items={"eu_min": 2, "eu_max": 2, "ea_min": 2, "ea_max": 2}), range(5))
    assert len(plan) == 5 and all(s.attributes is not None and s.theme is None and len(s.targets) == 4 for s in plan)
    assert len({s.attributes.model_dump_json() for s in plan}) > 1


def test_config_errors_name_file_and_key(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("pipeline: concise\nnum_dialogues: 2\nturns: {max_turns: 12}\n")
    with pytest.raises(ConfigError, match="g.yaml"):
        load_config(path, GenerateConfig)
    path.write_text("pipeline: mads\nnum_dialogues: 2\nengine: {modle: x}\n")
    with pytest.raises(ConfigError, match=r"g.yaml: engine.modle: unknown key"):
        load_config(path, GenerateConfig)
    path.write_text("pipeline: mads\nnum_dialogues: 2\nray: {actors: {min: 3, max: 2}}\n")
    with pytest.raises(ConfigError, match=r"ray.actors"):
        load_config(path, GenerateConfig)
    autoscaled = GenerateConfig.model_validate({"pipeline": "mads", "num_dialogues": 1, "ray": {"actors": {"min": 1, "max": 8}}})
    assert autoscaled.ray.pool == (1, 8)


# ---------------------------------------------------------------- the dialogue coroutine

def test_turns_and_supervisor_cadence_of_one_dialogue():
    config = make_config(n=1)
    engine = FakeEngine(all_met_at=None)  # never satisfied: runs to max_turns
    [result] = run(engine, config, sampler_specs(config, [0]))
    assert result.metadata["turns"] == 14 and result.metadata["stop_reason"] == "max_turns"
    kinds = [kind(r) for r in engine.calls]
    assert kinds[0] == "background" and kinds.count("turn") == 14
    # the supervisor looks after turns 4, 6, 8, 10 and 12
    sup_after = [kinds[:i].count("turn") for i, k in enumerate(kinds) if k == "SupervisorCheck"]
    assert sup_after == [4, 6, 8, 10, 12]
    assert kinds[-len(sampler_specs(config, [0])[0].targets):] == [
        k for k in kinds if k in ("EUDraft", "EADraft")]  # extraction last, all at once
    assert result.dialogue.turns[0].speaker is Speaker.CLIENT
    assert result.dialogue.turns[1].speaker is Speaker.THERAPIST


@pytest.mark.parametrize("met_at, turns", [(0, 4), (6, 6), (7, 8)])
def test_stops_when_all_met_never_before_min(met_at, turns):
    config = make_config(n=2)
    results = run(FakeEngine(all_met_at=met_at), config, sampler_specs(config, range(2)))
    assert [r.metadata["turns"] for r in results] == [turns, turns]
    assert all(r.metadata["stop_reason"] == "all_met" for r in results)
    assert results[0].metadata["verdicts"][-1]["scenario_clear"] is True


def test_dialogues_run_as_coroutines_side_by_side():
    """Eight dialogues of different lengths on one engine: while one waits on its supervisor
    the others' turns reach the engine; each gets the same result it gets alone."""
    config = make_config(n=8)
    specs = sampler_specs(config, range(8))
    engine = FakeEngine(all_met_at=None, delay=0.001)
    together = run(engine, config, specs)
    order = [r.messages[-1]["content"][:40] for r in engine.calls]
    first_extraction = next(i for i, r in enumerate(engine.calls) if kind(r) in ("EUDraft", "EADraft"))
    assert {kind(r) for r in engine.calls[:16]} >= {"background", "turn"} and first_extraction > 8 * 14
    alone = [run(FakeEngine(all_met_at=None), config, [s])[0] for s in specs]
    assert [r.model_dump() for r in together] == [r.model_dump() | {"metadata": r.metadata | {
        "seconds": t.metadata["seconds"]}} for r, t in zip(alone, together)]
    assert len(order) == len(engine.calls)


def test_failures_are_recorded_per_dialogue_and_item():
    config = make_config(n=4)
    plan = sampler_specs(config, range(4))
    doomed = plan[1].persona.description
    engine = FakeEngine(
        all_met_at=None,
        fail=lambda r: r.response_model is None and doomed in r.messages[-1]["content"] and "novelist" in r.messages[0]["content"],
        duplicate=lambda r: r.sampling.seed % 2 == 0)
    results = run(engine, config, plan)
    failed = results[1].metadata
    assert failed["status"] == "failed" and failed["error"].startswith("background: validation: boom")
    assert results[1].dialogue is None and results[1].eu == [] and not results[1].transient
    ok = [r for r in results if r.metadata["status"] == "ok"]
    dups = [f for r in ok for f in r.metadata["item_failures"]]
    assert dups and all(f["error"].startswith("invalid: wrong_causes: only 0 distinct wrong options") for f in dups)
    for r in ok:
        assert len(r.eu) + len(r.ea) + len(r.metadata["item_failures"]) == len(plan[r.metadata["index"]].targets)
        for row in r.eu + r.ea:
            parse_item(row)


def test_an_engine_or_network_failure_marks_the_dialogue_for_a_redo():
    """A reply that fails for the engine's sake (not the model's) is no verdict on the dialogue:
    its result is marked transient, which the job leaves unwritten so a re-run does it again."""
    from ec2er.llm import GenerationError

    config = make_config(n=2)
    engine = FakeEngine()
    one = engine._one
    engine._one = lambda r: (RawCompletion("", error=GenerationError(kind="http", message="HTTP 503"))
                             if kind(r) == "EADraft" else one(r))
    results = run(engine, config, sampler_specs(config, range(2)))
    assert len(results) == 2 and all(r.transient and r.metadata["status"] == "ok" for r in results)


def test_an_empty_turn_fails_its_dialogue():
    config = make_config(n=2)
    specs = sampler_specs(config, range(2))
    first_background = run(FakeEngine(), config, specs[:1])[0].dialogue.background
    engine = FakeEngine()
    one = engine._one
    # the first dialogue's first 4-message turn prompt gets a blank reply; the other is untouched
    engine._one = lambda r: (RawCompletion("  ", finish_reason="stop")
                             if r.response_model is None and len(r.messages) == 4
                             and first_background in r.messages[0]["content"] else one(r))
    failed, ok = run(engine, config, specs)
    assert failed.metadata["status"] == "failed" and failed.metadata["error"] == "turn: empty"
    assert failed.dialogue is None and not failed.eu and ok.metadata["status"] == "ok"


def test_concise_runs_ten_messages_without_supervisor():
    config = make_config(n=2, pipeline="concise")
    engine = FakeEngine()
    results = run(engine, config, sampler_specs(config, range(2)))
    assert [r.metadata["turns"] for r in results] == [10, 10]
    assert not any(kind(r) == "SupervisorCheck" for r in engine.calls)
    assert "condensed background" in engine.calls[0].messages[-1]["content"]


def test_prompts_stay_within_max_model_len():
    config = make_config(n=1, engine={"model": "fake", "max_model_len": 700},
                         sampling={"turn": {"max_tokens": 100}, "background": {"max_tokens": 100},
                                   "supervisor": {"max_tokens": 100}, "extraction": {"max_tokens": 200}})
    engine = FakeEngine(all_met_at=None)
    long_text = "a long reply that keeps going " * 20
    one = engine._one
    engine._one = lambda r: RawCompletion(long_text) if r.response_model is None else one(r)
    [result] = run(engine, config, sampler_specs(config, [0]))
    budget = TokenBudget(700, engine.count_tokens)
    for r in engine.calls:
        assert budget.messages_tokens(r.messages) <= 700 - r.sampling.max_tokens
    assert result.metadata["turns"] == 14
    last_turn = [r for r in engine.calls if kind(r) == "turn"][-1]
    assert last_turn.messages[0]["role"] == "system" and long_text.strip() in last_turn.messages[0]["content"]


def test_agent_prompts_are_prefix_cache_friendly():
    """Both agents open with the same background text, and each agent's next request extends
    its previous one, so an engine's prefix cache serves all but the newest messages."""
    config = make_config(n=1)
    engine = FakeEngine(all_met_at=None)
    [result] = run(engine, config, sampler_specs(config, [0]))
    shared = SESSION_CONTEXT.system_text(background=result.dialogue.background)
    turns = [r for r in engine.calls if kind(r) == "turn"]
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
    # scenarios, answers and explanations are sentences for the decoder: no schema words, timestamps,
    # fragments; the length is not (bounded repetitions make grammars slow to compile)
    assert re.match(props["scenario"]["pattern"], "Ana waited all day. Nobody called her.")
    assert not re.match(props["scenario"]["pattern"], "2019-08-23T17:45:56.778-0000")
    assert not any("Length" in key for p in props.values() for key in p)
    sentence = re.compile(props["correct_cause"]["pattern"])
    assert sentence.match("She fears losing the job she loves.") and sentence.match("Tell Ana the truth.")
    for not_an_answer in ("worst_choices", "furthermore", "the client's", "theoneofthemostimportantthings is it."):
        assert not sentence.match(not_an_answer)
    assert re.match(props["explanation"]["pattern"], "Ana hoped for praise, so the silence hurt her.")
    assert "pattern" in props["subject"]  # a name or a short noun phrase, no clause
    subject = EUDraft.model_fields["subject"]
    for ok in ("Kai", "Jane's mother", "the waitress"):
        EUDraft.__pydantic_validator__.validate_assignment(EUDraft.model_construct(), "subject", ok)
    with pytest.raises(ValueError):
        EUDraft.__pydantic_validator__.validate_assignment(EUDraft.model_construct(), "subject", "I offered a smile")
    assert subject.description
    # a dialogue's schema: the subject is one of its persons, written before the scenario
    persons = for_persons(EADraft, ("Ana", "Bo"))
    assert persons.model_json_schema()["properties"]["subject"]["enum"] == ["Ana", "Bo"]
    assert list(persons.model_fields)[:2] == ["subject", "scenario"] and issubclass(persons, EADraft)
    with pytest.raises(ValueError):
        persons.__pydantic_validator__.validate_assignment(persons.model_construct(), "subject", "the client's eyes")
    # ... and every sentence field opens with one of them, so none is the instruction echoed
    dialogue_props = persons.model_json_schema()["properties"]
    choice = re.compile(dialogue_props["worse_choices"]["items"]["pattern"])
    assert choice.match("Bo's sister calls him first.") and choice.match("Ana tells Bo the truth.")
    assert not choice.match("A sentence or two on what the best choice achieves.")
    assert re.match(dialogue_props["explanation"]["pattern"], "Ana hoped for praise, so the silence hurt her badly.")
    assert not re.match(dialogue_props["scenario"]["pattern"], "The client's story is long. It goes on.")
    ea = EADraft.model_json_schema()["properties"]
    assert (ea["worse_choices"]["minItems"], ea["worse_choices"]["maxItems"]) == (3, 5)
    assert "category" not in props and "category" not in ea  # assigned by the balancer


def test_a_client_has_one_name_from_the_roster():
    assert client_name("s3-0000001") == client_name("s3-0000001") in CLIENT_NAMES  # one persona, one name
    assert len({client_name(f"s3-{i:07d}") for i in range(40)}) > 10


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




def test_every_response_model_is_a_schema_the_grammar_engine_accepts():
    """vLLM refuses (per request) a JSON schema xgrammar cannot compile, e.g. a pattern with
    minLength/maxLength: every model ec2er asks for must pass vLLM's own check."""
    from vllm.v1.structured_output.backend_xgrammar import (
        has_xgrammar_unsupported_json_features,
    )

    from ec2er.curation.confidence import letter_model
    from ec2er.evaluation.prompts import official_answer_model
    from ec2er.generation.agents import SupervisorCheck
    from ec2er.schemas.training import ReasonedAnswer

    models = [EUDraft, EADraft, for_persons(EUDraft, ("Ana",)), for_persons(EADraft, ("Ana", "Bo")), SupervisorCheck, ReasonedAnswer, letter_model(4), letter_model(6),
              official_answer_model("EU", 6, 4), official_answer_model("EA", 4)]
    for model in models:
        assert not has_xgrammar_unsupported_json_features(model.model_json_schema()), model.__name__


def test_the_driver_writes_in_its_main_thread_and_no_reporter_outlives_a_stopped_write(monkeypatch):
    """A SIGTERM interrupts the write in the main thread (Ray Data then stops its own execution),
    and the progress reporter is joined before the error leaves: no thread of the driver may still
    call Ray when the CLI stops Ray (Ray's core worker, finding its raylet gone under a call, ends
    the process with status 1 instead of the CLI's 143)."""
    import threading
    import time

    import ray

    from ec2er.errors import Terminated
    from ec2er.generation.job import _write_with_progress

    writers = []

    class Dataset:
        def write_parquet(self, uri: str) -> None:
            writers.append(threading.current_thread() is threading.main_thread())
            time.sleep(1.3)  # the reporter reports once a second
            raise Terminated("stopped by SIGTERM")

    class Progress:  # the progress actor's handle: snapshot.remote() gives what ray.get returns
        class snapshot:  # noqa: N801 - an actor method's name
            @staticmethod
            def remote() -> dict[str, int]:
                return {"dialogues": 1}

    monkeypatch.setattr(ray, "get", lambda ref, timeout=None: ref)
    reports: list[dict[str, int]] = []
    before = set(threading.enumerate())
    with pytest.raises(Terminated):
        _write_with_progress(Dataset(), "results", Progress(), reports.append)
    assert writers == [True] and reports[:1] == [{"dialogues": 1}]
    assert set(threading.enumerate()) <= before  # the reporter is gone, not left running
