"""The model zoo. Importing this package registers every family's builders."""

from cnnlab.models import lenet, mlp  # noqa: F401  (registers the builders)
from cnnlab.models.registry import ModelSpec, create_model, list_models, model_spec, register_model

__all__ = ["ModelSpec", "create_model", "list_models", "model_spec", "register_model"]
