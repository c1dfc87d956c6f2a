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

Reading the registry touches files, so the replica's event loop never does it itself
(``asyncio.to_thread``), and a read is reused while the registry folder and its index are
unchanged (a publish changes both).
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from pathlib import Path
from typing import Any

from ec2er.adapters import INDEX, AdapterEntry, AdapterRegistry, is_valid_name
from ec2er.models import model_location
from ec2er.serving.vllm_api import vllm_symbol

RESOLVER_NAME = "ec2er-registry"


class ServableAdapters:
    """The registry's adapters trained on this server's base model. Read again whenever the
    registry changed, so that an adapter published while the server runs is servable at once."""

    def __init__(self, registry: str | Path, base_model: str):
        self.registry = AdapterRegistry(registry)
        self.base_location = model_location(base_model)
        self._read: tuple[tuple[Any, ...], list[AdapterEntry]] | None = None
        self._lock = threading.Lock()  # readers come from a thread pool

    def entries(self) -> list[AdapterEntry]:
        """The servable entries, from the last read while the registry's stamp is unchanged."""
        stamp = self._stamp()
        with self._lock:
            if self._read is None or self._read[0] != stamp:
                entries = [e for e in self.registry.entries() if model_location(e.base_model) == self.base_location]
                self._read = (stamp, entries)
            return self._read[1]

    def _stamp(self) -> tuple[Any, ...]:
        """What changes when a version is published: the registry folder's modification time (a
        version folder renamed in) and the index's. Every publish rewrites the index as a new file
        renamed over the old one, so its inode changes even within one tick of the file clock."""
        stamps: list[Any] = []
        for path in (self.registry.root, self.registry.root / INDEX):
            try:
                st = os.stat(path)
                stamps.append((st.st_mtime_ns, st.st_ino, st.st_size))
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def folder(self, name: str) -> Path | None:
        """The adapter folder of a servable registry name, else None. The name is checked before
        anything touches the filesystem."""
        if not is_valid_name(name):
            return None
        for entry in self.entries():
            if entry.name == name:
                return (self.registry.root / entry.path).absolute()
        return None


def servable_adapters(registry: str | Path, base_model: str) -> ServableAdapters:
    """One ``ServableAdapters`` per registry folder and base model in a process, so that its
    cached read is shared by the resolver, ``/v1/models`` and the serving stage."""
    return _servable_adapters(str(Path(registry).absolute()), base_model)


@functools.lru_cache(maxsize=64)
def _servable_adapters(registry: str, base_model: str) -> ServableAdapters:
    return ServableAdapters(registry, base_model)


def _resolver_class() -> type:
    LoRARequest = vllm_symbol("vllm.lora.request:LoRARequest")
    LoRAResolver = vllm_symbol("vllm.lora.resolver:LoRAResolver")

    class RegistryResolver(LoRAResolver):  # type: ignore[misc, valid-type]
        def __init__(self, adapters: ServableAdapters):
            self.adapters = adapters

        async def resolve_lora(self, base_model_name: str, lora_name: str) -> Any:
            # base_model_name is vLLM's model path; ServableAdapters already holds only the
            # adapters of this server's base model.
            folder = await asyncio.to_thread(self.adapters.folder, lora_name)
            if folder is None:
                return None
            # a placeholder id: OpenAIServingModels.resolve_lora assigns the real one before loading
            return LoRARequest(lora_name=lora_name, lora_int_id=1, lora_path=str(folder))

    return RegistryResolver


def register_registry_resolver(adapters: ServableAdapters) -> None:
    """Register the resolver with vLLM; OpenAIServingModels picks up every registered resolver
    when it is built, so this must run before ``init_app_state``."""
    registry = vllm_symbol("vllm.lora.resolver:LoRAResolverRegistry")
    registry.register_resolver(RESOLVER_NAME, _resolver_class()(adapters))


def adapter_cards(adapters: ServableAdapters, parent: str) -> list[Any]:
    """An OpenAI model card for each servable adapter, loaded or not: its registry name, the base
    model it answers for (``parent``) and its version; no server path."""
    ModelCard = vllm_symbol("vllm.entrypoints.serve.engine.protocol:ModelCard")
    ModelPermission = vllm_symbol("vllm.entrypoints.serve.engine.protocol:ModelPermission")

    return [ModelCard(id=e.name, root=e.name, parent=parent, version=e.version, permission=[ModelPermission()])
            for e in adapters.entries()]
