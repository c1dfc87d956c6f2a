"""Adapters by registry name: the vLLM ``LoRAResolver`` that loads them on first use, and the
list of every adapter a server can serve.

vLLM ships a filesystem resolver (``VLLM_PLUGINS=lora_filesystem_resolver``) that loads
``<dir>/<model>`` on first use. It cannot serve our registry as made:
- it joins the requested name to its folder unchecked (``../x`` reaches outside it), where we
  check every name with ``ec2er.adapters.check_name`` before any path is built;
- it serves an adapter only when the adapter's ``base_model_name_or_path`` equals the engine's
  model path, which training writes as the path it loaded the base from (another machine's cache,
  a temporary folder); the registry records the base model as recipes name it, and we match that;
- it serves any folder under the directory, where we serve only published registry versions
  (``<family>-v<N>``, immutable, so a name never changes meaning under vLLM's prefix cache);
- vLLM lists only adapters already loaded; ``/v1/models`` must list every registry adapter.
Loading, LRU eviction (``max_loras``, ``max_cpu_loras``) and reloading after eviction stay vLLM's.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from ec2er.adapters import AdapterEntry, AdapterRegistry, check_name
from ec2er.models import model_location

RESOLVER_NAME = "ec2er-registry"


@functools.lru_cache(maxsize=256)
class ServableAdapters:
    """The registry's adapters trained on this server's base model, read afresh on each call so
    that an adapter published while the server runs is servable at once."""

    def __init__(self, registry: str | Path, base_model: str):
        self.registry = AdapterRegistry(registry)
        self.base_location = model_location(base_model)

    def entries(self) -> list[AdapterEntry]:
        return [e for e in self.registry.entries() if model_location(e.base_model) == self.base_location]

    def folder(self, name: str) -> Path | None:
        """The adapter folder of a servable registry name, else None. The name is checked before
        anything touches the filesystem."""
        try:
            check_name(name)
        except ValueError:
            return None
        for entry in self.entries():
            if entry.name == name:
                return (self.registry.root / entry.path).absolute()
        return None


def _resolver_class() -> type:
    from vllm.lora.request import LoRARequest
    from vllm.lora.resolver import LoRAResolver

    class RegistryResolver(LoRAResolver):
        def __init__(self, adapters: ServableAdapters):
            self.adapters = adapters

        async def resolve_lora(self, base_model_name: str, lora_name: str) -> Any:
            # base_model_name is vLLM's model path; ServableAdapters already holds only the
            # adapters of this server's base model.
            folder = self.adapters.folder(lora_name)
            if folder is None:
                return None
            # a placeholder id: OpenAIServingModels.resolve_lora assigns the real one before loading
            return LoRARequest(lora_name=lora_name, lora_int_id=1, lora_path=str(folder))

    return RegistryResolver


def register_registry_resolver(adapters: ServableAdapters) -> None:
    """Register the resolver with vLLM; OpenAIServingModels picks up every registered resolver
    when it is built, so this must run before ``init_app_state``."""
    from vllm.lora.resolver import LoRAResolverRegistry

    LoRAResolverRegistry.register_resolver(RESOLVER_NAME, _resolver_class()(adapters))


def model_cards(adapters: ServableAdapters, parent: str, loaded: set[str]) -> list[Any]:
    """OpenAI model cards for the servable adapters that vLLM has not loaded (and so not listed)."""
    from vllm.entrypoints.serve.engine.protocol import ModelCard, ModelPermission

    return [ModelCard(id=e.name, root=str((adapters.registry.root / e.path).absolute()), parent=parent,
                      permission=[ModelPermission()])
            for e in adapters.entries() if e.name not in loaded]
