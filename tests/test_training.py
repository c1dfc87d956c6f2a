"""Training without Ray: the recipe, what the loss is computed on (from the real collated batch),
packing without cross-example attention, overlong and too-small data, preview, adapter export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from ec2er.cli import main
from ec2er.config import load_config
from ec2er.errors import ConfigError, DataError, Ec2erError
from ec2er.schemas.training import ReasonedAnswer
from ec2er.training.config import TrainConfig
from ec2er.training.data import (
    IGNORE,
    ChatFormat,
    PadCollator,
    build_rows,
    encode_file,
    load_training_data,
    nonpad_share,
    packed_rows,
    read_examples,
    unpacked_rows,
)

REPO = Path(__file__).resolve().parents[1]
CURATED = REPO / "tests" / "fixtures" / "curated"
TINY_RECIPE = REPO / "pipelines" / "train-tiny-random.yaml"


@pytest.fixture(scope="module")
def tiny_format(tiny_model: str) -> ChatFormat:
    return ChatFormat.load(tiny_model)


@pytest.fixture(scope="module")
def smollm2_format(smollm2_model: str) -> ChatFormat:
    return ChatFormat.load(smollm2_model)


def _recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(text)
    return path


# ---- the recipe ----

def test_every_train_recipe_validates():
    # (effective batch, gradient accumulation) as each recipe's comment works them out
    stated = {"train-tiny.yaml": (4, 1), "train-qwen2.5-7b.yaml": (64, 2), "train-mistral-7b.yaml": (32, 4),
              "train-llama3.1-8b.yaml": (32, 2)}
    for path in sorted((REPO / "pipelines").glob("train-*.yaml")):
        config = load_config(path, TrainConfig)
        if path.name in stated:
            assert (config.effective_batch_size(), config.gradient_accumulation()) == stated[path.name], path.name
            assert config.optim.effective_batch_size == stated[path.name][0]
    assert load_config(REPO / "pipelines" / "train-mistral-7b.yaml", TrainConfig).zero_stage() == 3


def test_unknown_recipe_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"train.yaml: lora.rnak: unknown key"):
        load_config(_recipe(tmp_path, "name: x\nlora: {rnak: 8}\n"), TrainConfig)


def test_effective_batch_must_divide(tmp_path):
    text = "name: x\noptim: {per_device_batch_size: 2, effective_batch_size: 6}\nray: {num_workers: 2}\n"
    with pytest.raises(ConfigError, match="effective_batch_size 6 is not a multiple of .* = 4"):
        load_config(_recipe(tmp_path, text), TrainConfig)
    config = load_config(_recipe(tmp_path, text.replace("6}", "8}")), TrainConfig)
    assert config.gradient_accumulation() == 2


def test_bad_family_name_and_missing_deepspeed_file_are_named(tmp_path):
    with pytest.raises(ConfigError, match="name: .*invalid adapter family"):
        load_config(_recipe(tmp_path, "name: ../evil\n"), TrainConfig)
    with pytest.raises(ConfigError, match="deepspeed: .*no such DeepSpeed config file"):
        load_config(_recipe(tmp_path, "name: x\ndeepspeed: nope.json\n"), TrainConfig)


def test_run_name_follows_what_is_trained_not_where_it_runs():
    base = TrainConfig(name="fam")
    same = TrainConfig(name="fam", logging_steps=1, ray={"max_failures": 5, "storage_path": "/x"})
    assert base.default_run_name("d1") == same.default_run_name("d1")
    assert base.default_run_name("d1").startswith("fam-")
    assert base.default_run_name("d1") != base.default_run_name("d2")
    assert base.default_run_name("d1") != TrainConfig(name="fam", optim={"learning_rate": 1e-3}).default_run_name("d1")


# ---- what carries loss, from the collated batch the trainer uses ----

def _prompt_length(fmt: ChatFormat, prompt: str) -> int:
    """Prompt tokens as an engine sees them, computed here independently of ChatFormat.encode."""
    text = fmt.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return len(fmt.tokenizer(text, add_special_tokens=False)["input_ids"])


def _check_unpacked_batch(fmt: ChatFormat, batch_size: int = 4) -> None:
    data = load_training_data(CURATED, fmt, 1024, "drop", 1)
    _, examples = read_examples(CURATED / "train.jsonl")
    rows = build_rows(data.train.examples, packing=False, max_length=1024)[:batch_size]
    batch = PadCollator(fmt.fill_id)(rows)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    eos = fmt.tokenizer.eos_token_id
    for i, example in enumerate(examples[:batch_size]):
        ids, labels, mask = batch["input_ids"][i], batch["labels"][i], batch["attention_mask"][i]
        n_real, n_prompt = int(mask.sum()), _prompt_length(fmt, example.prompt)
        assert (labels[:n_prompt] == IGNORE).all(), "a prompt token carries loss"
        assert (labels[n_prompt:n_real] == ids[n_prompt:n_real]).all(), "an answer token carries no loss"
        assert int(ids[n_real - 1]) == eos and int(labels[n_real - 1]) == eos, "the EOS is not learned"
        assert (labels[n_real:] == IGNORE).all() and (mask[n_real:] == 0).all(), "padding carries loss"
        trained = fmt.tokenizer.decode(labels[n_prompt:n_real - 1])
        assert ReasonedAnswer.model_validate_json(trained).model_dump_json() == \
            ReasonedAnswer.model_validate_json(example.target).model_dump_json()
    assert (batch["attention_mask"] == 0).any(), "the batch should need padding for this test to mean anything"


def test_collated_batch_trains_the_answer_and_its_eos_only(tiny_format):
    _check_unpacked_batch(tiny_format)


def test_eos_is_learned_even_when_the_tokenizer_pads_with_it(smollm2_format):
    # SmolLM2's pad token IS its EOS (<|im_end|>): the source paper's bug masked it as padding
    tok = smollm2_format.tokenizer
    assert tok.pad_token_id == tok.eos_token_id
    assert smollm2_format.fill_id != tok.eos_token_id
    _check_unpacked_batch(smollm2_format)


def test_packed_batch_trains_the_same_tokens_and_restarts_positions(tiny_format):
    data = load_training_data(CURATED, tiny_format, 1024, "drop", 1)
    prompts = {e.example_id: e.prompt for e in read_examples(CURATED / "train.jsonl")[1]}
    by_ids = {tuple(e.input_ids): e for e in data.train.examples}
    rows = packed_rows(data.train.examples, 1024)
    assert len(rows) < len(data.train.examples) and all(len(r["input_ids"]) <= 1024 for r in rows)
    rows = sorted(rows, key=lambda r: len(r["input_ids"]))[:1] + rows[:1]  # two rows of unequal length
    batch = PadCollator(tiny_format.fill_id)(rows)
    assert "attention_mask" not in batch and batch["use_cache"] is False
    eos, width, seen = tiny_format.tokenizer.eos_token_id, batch["input_ids"].shape[1], 0
    for r, row in enumerate(rows):
        n = len(row["input_ids"])
        positions = batch["position_ids"][r].tolist()
        starts = [i for i in range(n) if positions[i] == 0] + [n]
        for a, b in zip(starts, starts[1:]):
            ids, labels = batch["input_ids"][r, a:b], batch["labels"][r, a:b]
            example = by_ids[tuple(ids.tolist())]  # every segment is one whole example
            n_prompt = _prompt_length(tiny_format, prompts[example.example_id])
            assert positions[a:b] == list(range(b - a))
            assert (labels[:n_prompt] == IGNORE).all() and (labels[n_prompt:] == ids[n_prompt:]).all()
            assert int(labels[-1]) == eos
            seen += 1
        assert (batch["labels"][r, n:] == IGNORE).all() and positions[n:] == list(range(width - n))
    assert seen >= 3 and any(len(r["input_ids"]) < width for r in rows)


def test_nonpad_share_is_one_for_single_rows_and_below_for_padded_batches(tiny_format):
    data = load_training_data(CURATED, tiny_format, 1024, "drop", 1)
    unpacked = unpacked_rows(data.train.examples)
    assert nonpad_share(unpacked, 1) == 1.0
    assert 0.5 < nonpad_share(unpacked, 4) < 1.0


# ---- packing: no attention across examples ----

def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def test_packed_logits_equal_unpacked_and_a_broken_packing_would_be_caught(tiny_model, tiny_format):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    data = load_training_data(CURATED, tiny_format, 1024, "drop", 1)
    examples = data.train.examples[:3]
    collate = PadCollator(tiny_format.fill_id)
    alone = {e.example_id: _logits(model, collate(unpacked_rows([e])))[0] for e in examples}
    (row,) = packed_rows(examples, 4096)
    batch = collate([row])
    order = sorted(examples, key=lambda e: (-len(e.input_ids), e.example_id))  # packed_rows' order

    def worst(logits: torch.Tensor) -> list[float]:
        diffs, start = [], 0
        for e in order:
            diffs.append(float((logits[start:start + len(e.input_ids)] - alone[e.example_id]).abs().max()))
            start += len(e.input_ids)
        return diffs

    assert max(worst(_logits(model, batch)[0])) < 1e-4
    # the same row, broken three ways, must differ beyond the tolerance after the first example
    continuous = {**batch, "position_ids": torch.arange(batch["input_ids"].shape[1])[None]}
    with_mask = {**batch, "attention_mask": torch.ones_like(batch["input_ids"])}
    with_cache = {k: v for k, v in batch.items() if k != "use_cache"}
    for broken in (continuous, with_mask, with_cache):
        diffs = worst(_logits(model, broken)[0])
        assert diffs[0] < 1e-4 and min(diffs[1:]) > 1e-2, diffs


# ---- overlong, too small, preview ----

def test_overlong_examples_are_counted_and_dropped_or_truncated(tiny_format):
    train = CURATED / "train.jsonl"
    full = encode_file(train, tiny_format, 4096, "drop").examples
    lengths = [len(e.input_ids) for e in full]
    limit = sorted(lengths)[len(lengths) // 2]
    over = sum(n > limit for n in lengths)
    dropped = encode_file(train, tiny_format, limit, "drop")
    assert (dropped.overlong, dropped.dropped, dropped.truncated) == (over, over, 0) and over > 0
    assert len(dropped.examples) == len(full) - over
    cut = encode_file(train, tiny_format, limit, "truncate")
    assert (cut.overlong, cut.truncated, cut.dropped) == (over, over, 0) and len(cut.examples) == len(full)
    eos = tiny_format.tokenizer.eos_token_id
    for before, after in zip(full, cut.examples):  # the prompt's start goes; the answer and EOS stay
        assert len(after.input_ids) <= limit and after.labels[0] == IGNORE and after.labels[-1] == eos
        assert after.trained_tokens == before.trained_tokens
        assert after.input_ids == before.input_ids[-len(after.input_ids):]
    # an answer that alone fills max_length cannot keep a prompt token: dropped even when truncating
    tight = encode_file(train, tiny_format, min(e.trained_tokens for e in full), "truncate")
    assert tight.overlong == tight.dropped == len(full) and not tight.examples


def test_too_small_or_empty_training_set_is_one_clear_error(tiny_format, tmp_path):
    with pytest.raises(DataError, match=r"train.jsonl: 18 training examples from 12 items; .*min_examples is 100"):
        load_training_data(CURATED, tiny_format, 1024, "drop", 100)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "train.jsonl").write_text("")
    with pytest.raises(DataError, match=r"empty/train.jsonl: 0 training examples from 0 items"):
        load_training_data(empty, tiny_format, 1024, "drop", 1)
    with pytest.raises(DataError, match=r"nowhere: no such curated folder"):
        load_training_data(tmp_path / "nowhere", tiny_format, 1024, "drop", 1)


def test_cli_reports_an_empty_training_set_in_one_line_without_starting_ray(tmp_path, capsys):
    empty = tmp_path / "curated"
    empty.mkdir()
    (empty / "train.jsonl").write_text("")
    code = main(["train", "--config", str(TINY_RECIPE), "--data", str(empty), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "curated/train.jsonl: 0 training examples" in err[0]


def test_training_refuses_items_validate_refuses_naming_file_and_line(tmp_path, capsys):
    """One valid-item definition: an item `ec2er validate` rejects (too few options) stops
    training at its start, in one line naming the file and the line, with nothing published and
    no empty logs/ folder left behind."""
    curated = tmp_path / "curated"
    curated.mkdir()
    lines = (CURATED / "train.jsonl").read_text().splitlines()
    bad = json.loads(lines[8])  # line 9, an EA item: 3 options where EmoBench has 4, the gold kept
    bad["choices"] = [c for c in bad["choices"] if c != bad["label"]][:2] + [bad["label"]]
    lines[8] = json.dumps(bad)
    train = curated / "train.jsonl"
    train.write_text("\n".join(lines) + "\n")
    assert main(["validate", str(train)]) == 1
    assert f"{train}:9: option_count" in capsys.readouterr().err
    out, registry = tmp_path / "out", tmp_path / "registry"
    code = main(["train", "--config", str(TINY_RECIPE), "--data", str(curated), "--output", str(out),
                 "--set", f"registry={registry}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"{train}:9: option_count: choices: 3 options, expected 4" in err[0]
    assert not (out / "logs").exists() and not list(registry.glob("*-v*"))


def test_preview_needs_at_least_one_example(capsys):
    code = main(["train", "preview", "--config", str(TINY_RECIPE), "--data", str(CURATED), "--n", "-3"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.strip() == "ec2er: error: ec2er train preview: --n -3: give at least 1 example to print"


def test_preview_prints_what_is_learned(capsys):
    code = main(["train", "preview", "--config", str(TINY_RECIPE), "--data", str(CURATED), "--n", "2"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(lines) == 2
    _, examples = read_examples(CURATED / "train.jsonl")
    for line, example in zip(lines, examples):
        shown = json.loads(line)
        assert shown["eos_trained"] is True
        assert shown["trained_text"].endswith("<|im_end|>")
        assert shown["text"].endswith(shown["trained_text"]) and example.prompt in shown["text"]
        assert example.prompt not in shown["trained_text"]
        assert ReasonedAnswer.model_validate_json(shown["trained_text"].removesuffix("<|im_end|>"))


# ---- the adapter that leaves training ----

def test_export_rewrites_the_base_and_refuses_an_untrained_adapter(tiny_model, tmp_path):
    from ec2er.models.random_lora import init_lora_adapter
    from ec2er.training.export import export_adapter

    untrained = init_lora_adapter(tiny_model, tmp_path / "untrained", rank=4)  # peft starts B at zero
    with pytest.raises(Ec2erError, match="empty or untrained"):
        export_adapter(untrained, tmp_path / "out", tiny_model)
    trained = init_lora_adapter(tiny_model, tmp_path / "trained", rank=4, random_b=True)
    config = json.loads((trained / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/somewhere/else"
    (trained / "adapter_config.json").write_text(json.dumps(config))
    stats = export_adapter(trained, tmp_path / "out", tiny_model)
    assert stats["tensors"] == 16 and stats["nonzero_b"] == 8
    exported = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert exported["base_model_name_or_path"] == tiny_model
    assert (tmp_path / "out" / "tokenizer.json").is_file()
    shutil.rmtree(tmp_path / "out")


@pytest.mark.parametrize("address", [None, "127.0.0.1:6379"])
def test_the_trainer_starts_no_dataset_manager_without_datasets_and_a_local_run_no_cleaner(address, monkeypatch,
                                                                                           tmp_path):
    from ec2er.training.trainer import torch_trainer

    if address:
        monkeypatch.setenv("RAY_ADDRESS", address)
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    config = TrainConfig.model_validate({"name": "t", "registry": str(tmp_path)})
    names = {type(cb).__name__ for cb in torch_trainer(config, {}, "run", str(tmp_path))._create_default_callbacks()}
    assert "DatasetsCallback" not in names and "BackendSetupCallback" in names, names
    assert ("PlacementGroupCleanerCallback" in names) == bool(address), names
