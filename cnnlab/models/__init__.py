"""The model zoo. Importing this package registers every family's builders."""

from cnnlab.models import (  # noqa: F401  (each module registers its builders)
    alexnet, densenet, googlenet, lenet, mlp, mnist_nets, nin, resnet, small_nets, vgg, zfnet,
)
from cnnlab.models.catalog import ModelInfo, describe_models, parameter_count
from cnnlab.models.registry import (
    ModelSpec, create_model, default_recipe, list_models, model_options, model_spec, register_model, uninitialized,
)

__all__ = ["ModelInfo", "ModelSpec", "create_model", "default_recipe", "describe_models", "list_models", "model_options",
           "model_spec", "parameter_count", "register_model", "uninitialized"]
