"""Shared fixtures: one LeNet run trained with the default options on the embedded digits."""

import inspect
import re
import signal

import pytest


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """``cnnlab train lenet`` with every default (the README's main job), trained once."""
    from cnnlab.training import TrainConfig, train

    return train(TrainConfig(model="lenet", runs_dir=str(tmp_path_factory.mktemp("runs"))), progress="none")


@pytest.fixture(scope="session", autouse=True)
def data_dir_of_its_own(tmp_path_factory):
    """Downloads and ImageFolder decode caches go to a temporary directory, never ~/.cache/cnnlab
    (session-wide, so that runs trained by session fixtures record it too)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNLAB_DATA_DIR", str(tmp_path_factory.mktemp("data")))
        yield


@pytest.fixture(scope="session", autouse=True)
def one_thread_count():
    """Training fits torch's CPU threads to the machine's load before every epoch (cnnlab.threads),
    and another thread count rounds differently: the tests that compare two runs bit for bit would
    pass or fail with whatever else the machine runs. So the suite keeps one count, in this process
    and in every child (``OMP_NUM_THREADS``, which training keeps); tests/test_threads.py, which
    tests the policy itself, lifts it."""
    import torch

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))
        yield


@pytest.fixture
def ctrl_c_reaches_python():
    """For a test that delivers SIGINT to this process: Python's own Ctrl-C handler for its
    duration. A script that runs ``pytest &`` starts it with SIGINT ignored, and training leaves an
    ignored SIGINT ignored (as a background job expects), so the test would see no Ctrl-C."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


# -- the quick subset: pytest -m "not slow" ----------------------------------------------------------

# fixtures that train a run (or several) before their tests start
TRAINING_FIXTURES = {"default_run", "digits_run", "evaluated_runs", "permuted", "two_process_run", "two_runs",
                     "whole", "whole_run"}
# what a test's own code calls when it trains, resumes or starts cnnlab in another process
TRAINING_CALLS = re.compile(r"\b(train|resume|run_experiment|resume_experiment|train_model)\(|[\"']train[\"']|"
                            r"[\"']experiment[\"']|subprocess\.|\bstart\(|[\"']-m[\"'], [\"']cnnlab")


def pytest_collection_modifyitems(items):
    """Mark ``slow`` every test that trains (through a fixture or in its own code) or starts a
    process, besides those marked by hand: ``pytest -m "not slow"`` is then the quick subset,
    and a new test of that kind joins the slow ones without anyone remembering to mark it."""
    for item in items:
        function = getattr(item, "function", None)
        trains = TRAINING_FIXTURES & set(getattr(item, "fixturenames", ()))
        if not trains and function is not None:
            trains = TRAINING_CALLS.search(inspect.getsource(function))
        if trains:
            item.add_marker(pytest.mark.slow)
