"""The model zoo. Importing this package registers every family's builders."""

from cnnlab.models import (  # noqa: F401  (each module registers its builders)
    alexnet, densenet, googlenet, lenet, mlp, mnist_nets, nin, resnet, small_nets, vgg, zfnet,
)
from cnnlab.models.catalog import ModelInfo, describe_models, option_rows, parameter_count
from cnnlab.models.registry import (
    create_model, default_recipe, list_models, model_options, model_spec, recorded_model, register_model,
)
from cnnlab.models.signature import ModelOption, ModelSpec, signature_options, uninitialized
from cnnlab.models.user import is_reference, rebuild_reference, source_record

__all__ = ["ModelInfo", "ModelOption", "ModelSpec", "create_model", "default_recipe", "describe_models",
           "is_reference", "list_models", "model_options", "model_spec", "option_rows", "parameter_count",
           "rebuild_reference", "recorded_model", "register_model", "signature_options", "source_record",
           "uninitialized"]
