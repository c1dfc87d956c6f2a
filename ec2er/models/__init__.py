"""Model resolution: embedded defaults, local folders, hub ids."""

from ec2er.models.embedded import EMBEDDED, cache_dir, check_model, list_models, model_location, prepare_model, resolve_model

__all__ = ["EMBEDDED", "cache_dir", "check_model", "list_models", "model_location", "prepare_model", "resolve_model"]
