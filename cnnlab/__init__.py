"""cnnlab: a laboratory for the classic convolutional networks.

The flat API mirrors the CLI::

    import cnnlab
    model = cnnlab.create_model("vgg16", num_classes=10)
    print(cnnlab.summarize("resnet18").totals)
    run = cnnlab.train(cnnlab.TrainConfig(model="lenet", data="digits"))

Attributes are imported lazily, so ``import cnnlab`` (and ``cnnlab --help``) does not pay
for importing torch.
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "create_model": "cnnlab.models",
    "list_models": "cnnlab.models",
    "model_spec": "cnnlab.models",
    "describe_models": "cnnlab.models",
    "summarize": "cnnlab.summary",
    "training_cost": "cnnlab.summary",
    "fit_batch": "cnnlab.summary.fit",
    "network_diagram": "cnnlab.diagram",
    "save_diagram": "cnnlab.diagram",
    # (modules named unlike the functions: importing a submodule cnnlab.train would rebind
    # the package attribute ``cnnlab.train`` from the function to the module)
    "TrainConfig": "cnnlab.config",
    "config_from_file": "cnnlab.config_file",
    "options_toml": "cnnlab.config_file",
    "train": "cnnlab.training",
    "resume": "cnnlab.training",
    "evaluate": "cnnlab.evaluation",
    "load_dataset": "cnnlab.data",
    "Run": "cnnlab.runs",
    "RunRecord": "cnnlab.runs",
    "Checkpoint": "cnnlab.runs",
    "list_runs": "cnnlab.runs",
    "compare_runs": "cnnlab.compare",
    "plot_runs": "cnnlab.plots",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name):
    if name not in _API:
        raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
    return getattr(import_module(_API[name]), name)


def __dir__():
    return __all__
