"""The CPU thread policy: as many threads as the cores other processes leave free."""

import time

import pytest
import torch

from cnnlab import threads


@pytest.fixture
def torch_threads_restored():
    before = torch.get_num_threads()
    threads.forget()
    yield
    threads.forget()
    torch.set_num_threads(before)


def test_threads_are_the_free_cores_rounded_at_least_one():
    assert [threads.threads_for(free, cores=2) for free in (-0.5, 0.2, 0.6, 1.0, 1.4, 1.5, 2.0, 3.0)] == \
           [1, 1, 1, 1, 1, 2, 2, 2]
    assert threads.threads_for(5.4, cores=8) == 5


def test_other_processes_load_is_the_machines_busy_time_less_our_own():
    # 2 s of wall time, the machine busy 3.5 core-seconds, 1.5 of them this process's: 1 core
    assert threads.cores_used_by_others((10.0, 100.0, 4.0), (12.0, 103.5, 5.5)) == pytest.approx(1.0)
    # our own time counted slightly above the machine's (clock granularity) is no load, not negative
    assert threads.cores_used_by_others((0.0, 0.0, 0.0), (1.0, 0.9, 1.0)) == 0.0


def test_each_epoch_takes_the_cores_left_free_during_the_last(monkeypatch, torch_threads_restored):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads.time, "sleep", lambda seconds: None)
    # (wall, machine busy, own CPU): another process busy on one core, then gone
    views = iter([(0.0, 0.0, 0.0), (0.05, 0.1, 0.05),    # the first look: 1 core used by others
                  (3.0, 5.9, 2.9),                        # a 3 s epoch: still 1 core used by others
                  (3.01, 5.92, 2.91),                     # called again at once: too short to judge
                  (6.0, 11.0, 7.9)])                      # a 3 s epoch on 2 cores, alone: 0 others
    monkeypatch.setattr(threads, "snapshot", lambda: next(views))
    torch.set_num_threads(2)
    assert threads.fit_to_load("cpu") == 1 and torch.get_num_threads() == 1
    assert threads.fit_to_load("cpu") == 1
    assert threads.fit_to_load("cpu") == 1
    assert threads.fit_to_load("cpu") == 2 and torch.get_num_threads() == 2


def test_a_fixed_thread_count_and_other_devices_are_left_alone(monkeypatch, torch_threads_restored):
    monkeypatch.setattr(threads, "snapshot", lambda: pytest.fail("measured although it should not"))
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.fit_to_load("cpu") == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads.fit_to_load("cuda") == 2 and torch.get_num_threads() == 2


def test_a_trainings_first_epoch_looks_afresh_not_at_what_ran_since_an_earlier_training(
        monkeypatch, torch_threads_restored, tmp_path):
    from cnnlab.config import TrainConfig
    from cnnlab.training import train

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)

    def idle_machine():  # (wall, machine busy, own CPU): nobody but this process at work
        own = time.process_time()
        return time.monotonic(), own, own

    monkeypatch.setattr(threads, "snapshot", idle_machine)
    wall, busy, own = idle_machine()
    # an earlier training's last epoch ended 10 s ago, and another process kept a core busy since
    threads._previous = (wall - 10.0, busy - 10.0, own)
    torch.set_num_threads(1)  # as that earlier training left it
    train(TrainConfig(model="mlp", epochs=1, runs_dir=str(tmp_path)), progress="none")
    assert torch.get_num_threads() == 2  # the epoch ran on both (idle) cores
