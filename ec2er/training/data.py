"""Curated items -> token ids and labels the model learns from.

Each item becomes its training examples (``ec2er.schemas.training``: the paper's instruction and
the JSON target), rendered with the model's own chat template: the instruction as the user turn,
the JSON as the assistant turn. Labels are -100 (ignored by the loss) on every prompt token; the
answer tokens carry loss up to and INCLUDING the token that ends the assistant turn (ChatML's
``<|im_end|>``, Llama's ``<|eot_id|>``, Mistral's ``</s>``), so the model learns to stop. Template
text after that token (ChatML's trailing newline) is never generated, so it is not trained on.

The source paper's code trained on the prompt too and masked EOS as padding (its pad token was
its EOS). Here padding is marked by position (attention mask 0, label -100), never by token
value, and the fill token is chosen distinct from every end-of-turn token.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ec2er.errors import DataError
from ec2er.io import fingerprint, read_records
from ec2er.llm.messages import fit_template
from ec2er.schemas import TrainingExample, training_examples
from ec2er.schemas.checks import valid_item
from ec2er.schemas.facts import CuratedFiles

IGNORE = -100  # the loss's ignore_index in transformers: labels equal to it carry no loss


@dataclass(frozen=True)
class EncodedExample:
    example_id: str
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(label != IGNORE for label in self.labels)


class ChatFormat:
    """A tokenizer, the ids that end an assistant turn, and a fill id for padding."""

    def __init__(self, tokenizer: Any, end_of_turn_ids: frozenset[int], model: str):
        self.tokenizer = tokenizer
        self.end_of_turn_ids = end_of_turn_ids
        self.model = model
        self.fill_id = fill_token_id(tokenizer, end_of_turn_ids, model)

    @classmethod
    def load(cls, model_folder: str) -> ChatFormat:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_folder)
        if not tokenizer.chat_template:
            raise DataError(f"{model_folder}: the tokenizer has no chat template; train an instruct model")
        return cls(tokenizer, end_of_turn_ids(tokenizer, model_folder), model_folder)

    def prompt_messages(self, example: TrainingExample) -> list[dict[str, str]]:
        """The conversation an engine is sent at inference: the instruction as the user turn."""
        return [{"role": "user", "content": example.prompt}]

    def encode(self, example: TrainingExample) -> tuple[list[int], int]:
        """Token ids of the whole example, ending at the assistant turn's end-of-turn token, and
        the number of prompt tokens. The prompt is rendered and tokenized on its own, exactly as
        an engine sees it, and must be a prefix of the whole example's tokens."""
        user = self.prompt_messages(example)
        conversation = user + [{"role": "assistant", "content": example.target}]
        # as the model's template accepts them, the same normalisation engines apply at inference
        prompt_text = self.tokenizer.apply_chat_template(fit_template(user, self.tokenizer), tokenize=False,
                                                         add_generation_prompt=True)
        full_text = self.tokenizer.apply_chat_template(fit_template(conversation, self.tokenizer), tokenize=False)
        # the templates write BOS themselves where the model wants one
        prompt = self.tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        full = self.tokenizer(full_text, add_special_tokens=False)["input_ids"]
        if full[: len(prompt)] != prompt:
            raise DataError(f"{self.model}: example {example.example_id}: the prompt's tokens are not a prefix "
                            f"of the whole example's tokens, so the answer boundary is unknown")
        end = next((i for i in range(len(prompt), len(full)) if full[i] in self.end_of_turn_ids), None)
        if end is None or end == len(prompt):
            raise DataError(f"{self.model}: example {example.example_id}: the chat template wrote no answer "
                            f"followed by an end-of-turn token (ids {sorted(self.end_of_turn_ids)})")
        return full[: end + 1], len(prompt)


def end_of_turn_ids(tokenizer: Any, model_folder: str) -> frozenset[int]:
    """The tokenizer's EOS and the generation config's EOS ids (Llama 3 lists several)."""
    from transformers import GenerationConfig

    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    try:
        eos = GenerationConfig.from_pretrained(model_folder).eos_token_id
    except OSError:  # a model without generation_config.json
        eos = None
    ids.update(eos if isinstance(eos, list) else [] if eos is None else [eos])
    if not ids:
        raise DataError(f"{model_folder}: the tokenizer has no EOS token, so no turn could be ended")
    return frozenset(ids)


def fill_token_id(tokenizer: Any, end_of_turn: frozenset[int], model: str) -> int:
    """A token id to fill padding with that is no end-of-turn token: the pad token unless it is
    the EOS (SmolLM2's is), else an added token named like a pad (Llama 3's
    <|finetune_right_pad_id|>), else the unknown token. Padding is masked by position anyway;
    the distinct id keeps transformers' non-padding token count (input_ids != pad) honest."""
    named_pad = sorted(i for t, i in tokenizer.get_added_vocab().items() if "pad" in t.lower())
    for candidate in (tokenizer.pad_token_id, *named_pad, tokenizer.unk_token_id):
        if candidate is not None and candidate not in end_of_turn:
            return candidate
    raise DataError(f"{model}: no pad, pad-like or unknown token distinct from the end-of-turn tokens")


@dataclass
class EncodedSet:
    """One split, encoded, with what happened to its overlong examples."""

    path: Path
    items: int
    examples: list[EncodedExample]
    overlong: int = 0  # examples longer than max_length
    truncated: int = 0  # of those, kept with the start of their prompt cut
    dropped: int = 0  # of those, left out
    examples_total: int = 0

    def counts(self) -> dict[str, int]:
        return {"items": self.items, "examples": self.examples_total, "kept": len(self.examples),
                "overlong": self.overlong, "truncated": self.truncated, "dropped": self.dropped,
                "trained_tokens": sum(e.trained_tokens for e in self.examples),
                "tokens": sum(len(e.input_ids) for e in self.examples)}


def read_examples(path: Path) -> tuple[int, list[TrainingExample]]:
    """A curated JSONL file's items and their training examples. Every item must pass the one
    valid-item definition (``ec2er.schemas.checks``, what ``ec2er validate`` applies): the first
    that does not is a DataError naming the file, the line and the reason."""
    items = read_records(path, valid_item)
    return len(items), [ex for item in items for ex in training_examples(item)]


def encode_example(fmt: ChatFormat, example: TrainingExample) -> tuple[list[int], list[int]]:
    ids, n_prompt = fmt.encode(example)
    return ids, [IGNORE] * n_prompt + ids[n_prompt:]


def encode_file(path: Path, fmt: ChatFormat, max_length: int,
                overlong: Literal["drop", "truncate"]) -> EncodedSet:
    n_items, examples = read_examples(path)
    out = EncodedSet(path=path, items=n_items, examples=[], examples_total=len(examples))
    for ex in examples:
        ids, labels = encode_example(fmt, ex)
        if len(ids) > max_length:
            out.overlong += 1
            answer = sum(label != IGNORE for label in labels)
            if overlong == "drop" or answer >= max_length:
                out.dropped += 1
                continue
            out.truncated += 1
            ids, labels = ids[-max_length:], labels[-max_length:]  # cut the prompt's start only
        out.examples.append(EncodedExample(ex.example_id, ids, labels))
    return out


@dataclass
class TrainingData:
    train: EncodedSet
    val: EncodedSet | None
    data_hash: str
    source: dict[str, str] = field(default_factory=dict)


def load_training_data(folder: Path, fmt: ChatFormat, max_length: int,
                       overlong: Literal["drop", "truncate"], min_examples: int) -> TrainingData:
    """Encode a curated folder's train.jsonl (required) and val.jsonl (optional)."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such curated folder")
    train_path, val_path = folder / CuratedFiles.TRAIN, folder / CuratedFiles.VAL
    train = encode_file(train_path, fmt, max_length, overlong)
    if len(train.examples) < min_examples:
        why = f" ({train.dropped} dropped as longer than max_length {max_length})" if train.dropped else ""
        raise DataError(f"{train_path}: {len(train.examples)} training examples from {train.items} items{why}; "
                        f"the recipe's min_examples is {min_examples}")
    val = encode_file(val_path, fmt, max_length, overlong) if val_path.is_file() else None
    # what was trained on, by content (the files were read as UTF-8 text above)
    data_hash = fingerprint({path.name: path.read_text("utf-8") for path in (train_path, val_path) if path.is_file()})
    return TrainingData(train, val, data_hash[:16],
                        {"train": str(train_path), **({"val": str(val_path)} if val else {})})


# ---- rows: what a dataloader batches ----

def unpacked_rows(examples: list[EncodedExample]) -> list[dict[str, list[int]]]:
    return [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]


def packed_rows(examples: list[EncodedExample], max_length: int) -> list[dict[str, list[int]]]:
    """Examples packed into rows of at most ``max_length`` tokens (first fit, longest first),
    with ``position_ids`` restarting at 0 for each example. With no attention mask, transformers
    (``masking_utils.find_packed_sequence_indices``) turns restarting positions into a
    block-causal mask, so no token attends across examples; the first token of every example
    is a prompt token (label -100), so no example is trained to predict the next one."""
    bins: list[list[EncodedExample]] = []
    space: list[int] = []
    for ex in sorted(examples, key=lambda e: (-len(e.input_ids), e.example_id)):
        fit = next((i for i, free in enumerate(space) if free >= len(ex.input_ids)), None)
        if fit is None:
            bins.append([ex])
            space.append(max_length - len(ex.input_ids))
        else:
            bins[fit].append(ex)
            space[fit] -= len(ex.input_ids)
    return [_concat(b) for b in bins]


def _concat(examples: list[EncodedExample]) -> dict[str, list[int]]:
    row: dict[str, list[int]] = {"input_ids": [], "labels": [], "position_ids": []}
    for e in examples:
        row["input_ids"] += e.input_ids
        row["labels"] += e.labels
        row["position_ids"] += list(range(len(e.input_ids)))
    return row


def build_rows(examples: list[EncodedExample], packing: bool, max_length: int) -> list[dict[str, list[int]]]:
    return packed_rows(examples, max_length) if packing else unpacked_rows(examples)


class PadCollator:
    """Right-pads a batch of rows to its longest row.

    transformers' ``DataCollatorForSeq2Seq`` pads input_ids and labels the same way but leaves
    ``position_ids`` unpadded, and ``DataCollatorWithFlattening`` packs a whole batch into one row
    of unbounded length instead of rows of max_length; this one does both row kinds in a few
    lines. Unpacked rows get an attention mask (0 on padding); packed rows must NOT get one (the
    block-causal mask comes from their position_ids), so their padding is one more "example" of
    restarting positions whose labels are all -100.
    """

    def __init__(self, fill_id: int):
        self.fill_id = fill_id

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        pads = [width - len(r["input_ids"]) for r in rows]
        batch = {
            "input_ids": torch.tensor([r["input_ids"] + [self.fill_id] * p for r, p in zip(rows, pads)]),
            "labels": torch.tensor([r["labels"] + [IGNORE] * p for r, p in zip(rows, pads)]),
        }
        if "position_ids" in rows[0]:
            batch["position_ids"] = torch.tensor([r["position_ids"] + list(range(p)) for r, p in zip(rows, pads)])
            # transformers derives the block-causal mask from position_ids only when the forward
            # has no KV cache; a model whose config keeps use_cache on would attend across
            # examples (measured: logits off by ~1 on the tiny model), so the batch says it
            batch["use_cache"] = False
        else:
            batch["attention_mask"] = torch.tensor([[1] * (width - p) + [0] * p for p in pads])
        return batch


def nonpad_share(rows: list[dict[str, list[int]]], batch_size: int, seed: int = 0) -> float:
    """Share of the token slots the model computes that hold real tokens, for batches of
    ``batch_size`` rows in a seeded random order (as the trainer's sampler draws them), each
    batch padded to its longest row."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    real = slots = 0
    for start in range(0, len(order), batch_size):
        lengths = [len(rows[i]["input_ids"]) for i in order[start:start + batch_size]]
        real += sum(lengths)
        slots += max(lengths) * len(lengths)
    return real / slots if slots else 0.0


def preview(fmt: ChatFormat, example: TrainingExample) -> dict[str, Any]:
    """What one example teaches: the whole rendered text, the decoded tokens that carry loss,
    and whether the end-of-turn token is among them."""
    ids, labels = encode_example(fmt, example)
    trained = [t for t in labels if t != IGNORE]
    decode = fmt.tokenizer.decode
    return {"example_id": example.example_id, "text": decode(ids, skip_special_tokens=False),
            "trained_text": decode(trained, skip_special_tokens=False),
            "eos_trained": bool(trained) and trained[-1] in fmt.end_of_turn_ids,
            "tokens": len(ids), "trained_tokens": len(trained)}
