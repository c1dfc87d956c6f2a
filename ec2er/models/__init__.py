"""Model resolution: embedded defaults, local folders, hub ids."""

from ec2er.models.registry import EMBEDDED, cache_dir, list_models, prepare_model, resolve_model

__all__ = ["EMBEDDED", "cache_dir", "list_models", "prepare_model", "resolve_model"]
