"""Shared fixtures: one LeNet run trained with the default options on the embedded digits."""

import pytest


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """``cnnlab train lenet`` with every default (the README's main job), trained once."""
    from cnnlab.training import TrainConfig, train

    return train(TrainConfig(model="lenet", runs_dir=str(tmp_path_factory.mktemp("runs"))), progress="none")
