"""Confidence from an independent judge: agreement with gold, ambiguous items flagged, not dropped."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from ec2er.llm import VLLMEngineConfig
from ec2er.curation.confidence import AMBIGUOUS, judge_confidence, letter_model
from ec2er.curation.config import JudgeConfig
from ec2er.llm import ChatEngine, ChatRequest, RawCompletion
from ec2er.schemas import parse_item

EU = {"qid": "e1", "language": "en", "coarse_category": "emotional_cues", "finegrained_category": "vocal_cues",
      "scenario": "Pilar hums while she repaints the kitchen.", "subject": "Pilar",
      "emotion_choices": ["Joy", "Anger", "Guilt", "Fear", "Pride", "Relief"], "emotion_label": "Joy",
      "cause_choices": ["She broke a cup", "She likes the colour", "She is late", "It is raining"],
      "cause_label": "She likes the colour"}
EA = {"qid": "a1", "language": "en", "category": "Social-Self", "question type": "Action",
      "scenario": "Ravi's colleague took credit for his report.", "subject": "Ravi",
      "choices": ["Say nothing", "Talk to the colleague privately", "Shout in the meeting", "Quit"],
      "label": "Talk to the colleague privately"}


class ScriptedJudge(ChatEngine):
    """Answers 'A' to every question: right for EU's emotion, wrong elsewhere."""

    model_name = "scripted"

    def _complete(self, requests: Sequence[ChatRequest]) -> list[RawCompletion]:
        return [RawCompletion(text=json.dumps({"answer": "A"})) for _ in requests]


def test_confidence_is_agreement_with_gold() -> None:
    items = [parse_item(EU), parse_item(EA)]
    scored, stats = judge_confidence(items, ScriptedJudge(), JudgeConfig(engine=VLLMEngineConfig(), samples=2))
    assert [it.confidence for it in scored] == [0.5, 0.0]  # EU: emotion right, cause wrong
    assert scored[0].flags is None and scored[1].flags == [AMBIGUOUS]
    assert stats["requests"] == 6 and stats["failed_requests"] == 0 and stats["ambiguous"] == 1


def test_letter_schema_allows_only_option_letters() -> None:
    schema = json.dumps(letter_model(4).model_json_schema())
    assert '"A"' in schema and '"D"' in schema and '"E"' not in schema


class Recording(ChatEngine):
    """Passes requests to a real engine and keeps what it answered."""

    def __init__(self, engine: ChatEngine):
        self.engine, self.model_name, self.answers = engine, engine.model_name, []

    def _complete(self, requests: Sequence[ChatRequest]) -> list[RawCompletion]:
        raws = self.engine._complete(requests)
        self.answers += [json.loads(r.text)["answer"] for r in raws]
        return raws


@pytest.mark.slow
def test_judge_on_vllm_tiny(tiny_engine) -> None:
    """On a real engine, constrained decoding always yields a letter, and each item's confidence
    is exactly the share of its sampled letters that name the gold: the EU gold is A (emotion)
    and B (cause), the EA gold is B."""
    items = [parse_item(EU), parse_item(EA)]
    judge = Recording(tiny_engine)
    scored, stats = judge_confidence(items, judge, JudgeConfig(engine=VLLMEngineConfig(), samples=3))
    assert stats["failed_requests"] == 0 and len(judge.answers) == 9
    emotion, cause, ea = judge.answers[0:3], judge.answers[3:6], judge.answers[6:9]
    expected_eu = (emotion.count("A") / 3 + cause.count("B") / 3) / 2
    assert scored[0].confidence == pytest.approx(expected_eu, abs=1e-4)
    assert scored[1].confidence == pytest.approx(ea.count("B") / 3, abs=1e-4)
