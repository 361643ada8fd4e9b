"""Training on several processes: the helpers in real two-process gloo groups (forked, so they
pay no import), the --gpus launcher, and torchrun end to end on the embedded digits."""

import multiprocessing
import os
import pickle
import queue
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnlab.runs.metrics import TIMING_COLUMNS
from cnnlab import distributed
from cnnlab.errors import DeviceUnavailable, PeerFailed, UsageError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_two_processes(work, wanted=(0, 1), timeout=60, **env):
    """Run ``work(rank)`` in two forked processes joined by torchrun's environment variables;
    returns {rank: result} for the ``wanted`` ranks, an exception as (type name, message, seconds)."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    port = free_port()

    def process(rank):
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port), **env)
        torch.set_num_threads(1)  # a forked process must not use the parent's OpenMP pool
        started = time.monotonic()
        try:
            result = work(rank)
        except Exception as error:
            result = (type(error).__name__, str(error), time.monotonic() - started)
        results.put((rank, pickle.dumps(result)))  # plain pickle: tensors by value, not shared memory

    processes = [context.Process(target=process, args=(rank,), daemon=True) for rank in range(2)]
    for p in processes:
        p.start()
    found = {}
    try:
        deadline = time.monotonic() + timeout
        while not set(wanted) <= found.keys():
            try:
                rank, result = results.get(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
                found[rank] = pickle.loads(result)
            except queue.Empty:
                assert time.monotonic() < deadline, f"no answer within {timeout} s"
    finally:
        for p in processes:
            p.kill()
            p.join()
    return found


# -- the helpers in a real two-process group ------------------------------------------------------

def share_the_work(rank):
    distributed.join_process_group(torch.device("cpu"))
    order = torch.randperm(1797, generator=torch.Generator().manual_seed(5))  # the same on both
    mine = distributed.shard(order)
    count = distributed.all_reduce_sums(torch.tensor([float(len(mine))]))
    model = torch.nn.Sequential(torch.nn.Linear(64, 10), torch.nn.BatchNorm1d(10))
    model[1].running_mean.fill_(float(rank))
    distributed.share_main_buffers(model)
    try:
        distributed.local_batch_size(63)
    except UsageError as error:
        uneven = str(error)
    with distributed.local_main_first():  # e.g. a download
        entered = time.time()
        time.sleep(0.2)
        left = time.time()
    return dict(rank=distributed.rank(), world=distributed.world_size(), main=distributed.is_main(),
                name=distributed.broadcast_from_main(f"chosen by rank {rank}"), order=order, mine=mine,
                count=count.item(), local_batch=distributed.local_batch_size(64), uneven=uneven,
                running_mean=model[1].running_mean.tolist(), entered=entered, left=left)


def test_two_processes_take_disjoint_shards_that_add_up_to_the_whole_set():
    found = in_two_processes(share_the_work)
    first, second = found[0], found[1]
    assert (first["rank"], first["world"], first["main"]) == (0, 2, True)
    assert (second["rank"], second["world"], second["main"]) == (1, 2, False)
    assert first["name"] == second["name"] == "chosen by rank 0"  # e.g. the run directory
    assert first["count"] == second["count"] == 1797  # the all-reduced count is the whole set
    mine = [set(found[rank]["mine"].tolist()) for rank in (0, 1)]
    assert not mine[0] & mine[1] and mine[0] | mine[1] == set(range(1797))
    # --batch-size 64 is global: step k of the 2 processes together is global batch k of 1 process
    order = first["order"]
    for k in range(1797 // 64):
        together = {*first["mine"][k * 32:(k + 1) * 32].tolist(), *second["mine"][k * 32:(k + 1) * 32].tolist()}
        assert together == set(order[k * 64:(k + 1) * 64].tolist())
    assert first["local_batch"] == second["local_batch"] == 32
    assert first["uneven"] == "--batch-size 63 is the global batch: it must divide evenly among the 2 processes"
    assert first["running_mean"] == second["running_mean"] == [0.0] * 10  # rank 0's statistics
    assert second["entered"] >= first["left"]  # local rank 0 first, then the machine's others


def averaged_gradient(rank):
    """One DDP step on each process's half of a batch; and the same batch on one process."""
    distributed.join_process_group(torch.device("cpu"))
    torch.manual_seed(rank)  # different initial weights: DDP must start every process from rank 0's
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    ddp = distributed.distribute(model, torch.device("cpu"))
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(2))
    torch.nn.functional.cross_entropy(ddp(distributed.shard(x)), distributed.shard(y)).backward()
    alone = [p.detach().clone().requires_grad_() for p in model.parameters()]
    w1, b1, w2, b2 = alone
    loss = torch.nn.functional.cross_entropy(torch.relu(x @ w1.T + b1) @ w2.T + b2, y)
    whole_batch = torch.autograd.grad(loss, alone)
    try:
        distributed.distribute(model, torch.device("cpu"), sync_bn=True)
    except UsageError as error:
        sync_bn_on_cpu = str(error)
    return dict(ddp=[p.grad for p in model.parameters()], whole_batch=whole_batch,
                weights=[p.detach() for p in model.parameters()], sync_bn_on_cpu=sync_bn_on_cpu)


def test_ddp_averages_two_half_batches_into_the_gradient_of_the_whole_batch():
    found = in_two_processes(averaged_gradient)
    for rank in (0, 1):
        for ddp, whole in zip(found[rank]["ddp"], found[rank]["whole_batch"]):
            torch.testing.assert_close(ddp, whole, rtol=1e-5, atol=1e-7)  # float summation order only
    for mine, others in zip(found[0]["weights"], found[1]["weights"]):
        assert torch.equal(mine, others)
    assert found[0]["sync_bn_on_cpu"] == "--sync-bn needs CUDA GPUs: PyTorch's SyncBatchNorm does not run on the CPU"


def evaluate_uneven_shards(rank):
    """Evaluation of 5 images in batches of 2 (rank 0: 2 batches, rank 1: 1) through DDP, after
    a training step left each process with batch-norm statistics of its own."""
    from cnnlab.data import BatchTransform
    from cnnlab.devices import Placement
    from cnnlab.distributed import World
    from cnnlab.training import evaluate_split

    distributed.join_process_group(torch.device("cpu"))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 3))
    ddp = distributed.distribute(model, torch.device("cpu"))
    ddp(torch.randn(4, 1, 8, 8) + rank).sum().backward()  # each process's own running statistics
    mine = model[1].running_mean.clone()
    images = torch.randint(0, 256, (5, 1, 8, 8), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 1, 0])
    transform = BatchTransform((8, 8), [0.5], [0.25])
    counts, add_up = [], distributed.all_reduce_sums  # (this process's copy of the module)
    distributed.all_reduce_sums = lambda sums: counts.append(add_up(sums)[2].item()) or sums
    cpu = torch.device("cpu")
    together = evaluate_split(ddp, Placement(cpu, "off", False), images, labels, transform, batch_size=2,
                              world=World(cpu, distributed.rank(), distributed.world_size()))
    with torch.no_grad():  # the reference: the whole set at once, by hand
        logits = model.eval()(transform(images))
    whole = (torch.nn.functional.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item())
    return dict(mine=mine, together=together, whole=whole, counts=counts)


def test_evaluation_counts_every_image_once_with_rank_0s_statistics_on_uneven_shards():
    found = in_two_processes(evaluate_uneven_shards)
    assert not torch.equal(found[0]["mine"], found[1]["mine"])  # the statistics differed ...
    assert found[0]["counts"] == found[1]["counts"] == [5.0]  # the all-reduced count is the whole set
    together = found[0]["together"]
    assert found[1]["together"] == together  # ... yet both processes report the same whole-set figures
    assert together == pytest.approx(found[0]["whole"], rel=1e-6)  # those of rank 0's model on the whole set


def rank_1_dies(rank):
    distributed.join_process_group(torch.device("cpu"))
    distributed.all_reduce_sums(torch.ones(3))
    if rank == 1:
        os._exit(3)
    while True:  # an epoch's steps, each adding up something with the dead process
        distributed.all_reduce_sums(torch.ones(3))


def rank_1_hangs(rank):
    distributed.join_process_group(torch.device("cpu"))
    distributed.all_reduce_sums(torch.ones(3))
    if rank == 1:
        time.sleep(120)
    distributed.all_reduce_sums(torch.ones(3))


def test_a_process_that_dies_makes_the_other_fail_at_once_with_one_line():
    kind, message, seconds = in_two_processes(rank_1_dies, wanted=[0])[0]
    assert kind == "PeerFailed" and "\n" not in message and seconds < 10
    assert message.startswith("training process 0 of 2 lost the others (")
    assert message.endswith("another process failed (see its error) or did not answer within 600 s "
                            "($CNNLAB_DIST_TIMEOUT)")


def test_a_process_that_hangs_makes_the_other_fail_after_the_timeout():
    kind, message, seconds = in_two_processes(rank_1_hangs, wanted=[0], CNNLAB_DIST_TIMEOUT="2")[0]
    assert kind == "PeerFailed" and "\n" not in message
    assert "within 2 s" in message and 2 <= seconds < 15


def test_outside_torchrun_every_helper_leaves_a_single_process_alone(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    distributed.join_process_group(torch.device("cpu"))
    assert not distributed.is_distributed() and distributed.world_size() == 1 and distributed.is_main()
    assert torch.equal(distributed.shard(torch.arange(10)), torch.arange(10))
    assert distributed.local_batch_size(63) == 63 and distributed.process_device("cuda:3") == "cuda:3"
    model = torch.nn.Linear(2, 2)
    assert distributed.distribute(model, torch.device("cpu"), sync_bn=True) is model


def test_under_torchrun_each_process_trains_on_its_own_gpu(monkeypatch):
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert [distributed.process_device(spec) for spec in ("auto", "cuda", "cuda:0", "cpu")] == \
        ["cuda:1", "cuda:1", "cuda:1", "cpu"]  # cuda:0: a run resumed from rank 0's config.json
    with pytest.raises(UsageError, match="CUDA GPUs or the CPU"):
        distributed.process_device("mps")
    monkeypatch.setenv("CNNLAB_DIST_TIMEOUT", "soon")
    with pytest.raises(UsageError, match=r"\$CNNLAB_DIST_TIMEOUT must be a positive number of seconds, not 'soon'"):
        distributed.timeout_seconds()


# -- the --gpus launcher ------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "a", "0,0", "-1", "0;1", "1,"])
def test_bad_gpu_lists_are_usage_errors(text):
    with pytest.raises(UsageError, match="--gpus takes distinct GPU numbers"):
        distributed.parse_gpus(text)


def test_gpu_lists_parse():
    assert distributed.parse_gpus("0,1") == [0, 1] and distributed.parse_gpus(" 3, 1") == [3, 1]


class FakePopen:
    """Records what would have been launched; exits with ``code``."""

    launched = []
    code = 0

    def __init__(self, command, env):
        self.launched.append((command, env))

    def wait(self):
        return self.code


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(distributed.subprocess, "Popen", FakePopen)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    FakePopen.launched, FakePopen.code = [], 0
    return FakePopen


def test_launcher_runs_torchrun_once_per_gpu(two_gpus, monkeypatch):
    assert distributed.launch_on_gpus([1, 0], ["train", "mlp"]) == 0
    (command, env), = two_gpus.launched
    assert command == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                       "-m", "cnnlab", "train", "mlp"]
    assert env["CUDA_VISIBLE_DEVICES"] == "1,0"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4, 6")  # --gpus numbers the GPUs this process sees
    distributed.launch_on_gpus([1], ["train", "mlp"])
    assert two_gpus.launched[-1][1]["CUDA_VISIBLE_DEVICES"] == "6"


def test_launcher_refuses_missing_gpus_and_nesting(two_gpus, monkeypatch):
    with pytest.raises(DeviceUnavailable, match=r"^GPU 2 is not available: this machine has 2 CUDA GPU\(s\), "
                                                r"numbered 0 to 1$"):
        distributed.launch_on_gpus([0, 2], ["train", "mlp"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceUnavailable, match="this machine has no CUDA GPU"):
        distributed.launch_on_gpus([0], ["train", "mlp"])
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UsageError, match="under torchrun leave it out"):
        distributed.launch_on_gpus([0], ["train", "mlp"])
    assert two_gpus.launched == []


def cli(*args):
    from typer.testing import CliRunner

    from cnnlab.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_gpus_hands_each_process_the_same_command(two_gpus, monkeypatch, tmp_path):
    from cnnlab import training
    from cnnlab.runs import Run, RunRecord

    trained = []
    monkeypatch.setattr(training, "train", lambda config, progress: trained.append((config, None)))
    args = ["train", "mlp", "--no-normalize", "--flip", "--optimizer", "sgd", "--nesterov", "--lr", "0.05",
            "-e", "2", "--batch-size", "32", "--sync-bn", "--clip-grad", "1", "--runs-dir", tmp_path, "--name", "n"]
    two_gpus.code = 3
    launched = cli(*args, "--gpus", "0,1")
    assert launched.exit_code == 3 and trained == []  # the launcher's exit code; it trains nothing itself
    (command, env), = two_gpus.launched
    assert command[:7] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           "-m", "cnnlab"]
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1" and not any("--gpus" in arg for arg in command)
    assert cli(*command[7:]).exit_code == 0  # what each process runs ...
    assert cli(*args, "--device", "cuda").exit_code == 0  # ... is this command on a GPU
    assert trained[0] == trained[1] and trained[0][0].sync_bn and trained[0][0].nesterov

    Run.create(tmp_path, "n").write_record(RunRecord(trained[0][0]))
    assert cli("train", "--resume", tmp_path / "n", "--gpus", "1").exit_code == 3
    assert two_gpus.launched[-1][0][7:] == ["train", f"--resume={tmp_path / 'n'}", "--device=cuda"]


def test_gpus_on_a_machine_without_them_is_one_line_and_launches_nothing(two_gpus, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = cli("train", "mlp", "--gpus", "0,1", "--runs-dir", tmp_path)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == ["error: GPU 0 is not available: this machine has no CUDA GPU"]
    both = cli("train", "mlp", "--gpus", "0,1", "--device", "cpu", "--runs-dir", tmp_path)
    assert both.exit_code == 2 and "--gpus chooses the GPUs; leave out --device and --gpu" in both.stderr
    assert two_gpus.launched == [] and list(tmp_path.iterdir()) == []


def test_peer_failure_messages_are_one_short_line():
    gloo = RuntimeError("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error "
                        "[127.0.0.1]:2444: Connection reset by peer. This is typically caused by a remote "
                        "worker hanging or bugs in the application. GLHF!")
    assert distributed.is_peer_failure(gloo)
    assert distributed.short_reason(gloo) == "Read error [127.0.0.1]:2444: Connection reset by peer"
    assert not distributed.is_peer_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not distributed.is_peer_failure(PeerFailed("already one line"))


# -- torchrun end to end: the README's command lines on the embedded digits ------------------------

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "cnnlab"]
# no batch norm, dropout or augmentation; float32 everywhere (--amp auto picks bf16 on some CPUs only)
JOB = ["train", "mlp", "--epochs", "12", "--batch-size", "64", "--amp", "off"]
EPOCHS = 12


def torchrun_env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on a two-core machine


def learning_curve(run):
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in run.metrics.rows()]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """``torchrun --nproc-per-node=2 -m cnnlab train mlp``, global batch 64, default run name."""
    runs_dir = tmp_path_factory.mktemp("runs")
    done = subprocess.run([*TORCHRUN, *JOB, "--runs-dir", str(runs_dir)], capture_output=True, text=True,
                          env=torchrun_env(), timeout=600)
    assert done.returncode == 0, done.stderr
    return runs_dir, done


@pytest.mark.slow
def test_two_processes_write_one_run_for_the_whole_data_set_like_one_process(two_process_run, tmp_path):
    from cnnlab.evaluation import evaluate
    from cnnlab.runs import Run
    from cnnlab.config import TrainConfig
    from cnnlab.training import resume, train

    runs_dir, done = two_process_run
    run, = [Run(path) for path in runs_dir.iterdir()]  # rank 0 chose the name; the other used it
    config = run.read_record().to_json()
    rows = run.metrics.rows()
    assert (config["world_size"], config["batch_size"]) == (2, 64)
    assert [row["epoch"] for row in rows] == list(range(1, EPOCHS + 1)) and run.checkpoint().epoch == EPOCHS
    assert done.stdout.count("\nepoch ") == EPOCHS and "2 processes (cpu)" in done.stdout  # rank 0 only
    # val_* are for the whole test split: the same as evaluating last.pt on it in one process
    result = evaluate(run.path, checkpoint="last", device="cpu")
    assert result.images == config["test_images"]
    assert rows[-1]["val_acc"] == result.top1 and rows[-1]["val_loss"] == pytest.approx(result.loss, rel=1e-5)

    # One process with the whole global batch takes the same steps on the same batches: DDP
    # averages the two half-batch gradients into the whole batch's. Only the order of float
    # additions differs (measured: losses agree to 2e-7, accuracies exactly); a model with batch
    # norm would differ more, since each process normalises its own half (see --sync-bn).
    alone = train(TrainConfig(model="mlp", epochs=EPOCHS, batch_size=64, amp="off", runs_dir=str(tmp_path)),
                  progress="none")
    alone_rows = alone.metrics.rows()
    assert rows[0]["train_loss"] == pytest.approx(alone_rows[0]["train_loss"], rel=1e-4)  # every image counted
    assert rows[0]["train_acc"] == pytest.approx(alone_rows[0]["train_acc"], abs=2 / 1408)
    assert abs(rows[-1]["val_acc"] - alone_rows[-1]["val_acc"]) <= 0.01  # at most 3 of 359 test images

    # a run may go on with another number of processes (the global batch stays)
    shutil.copytree(run.path, tmp_path / "continued")
    continued = resume(tmp_path / "continued", epochs=EPOCHS + 1, progress="none")
    assert continued.read_record().to_json()["world_size"] == 1 and len(continued.metrics.rows()) == EPOCHS + 1


def child_with_rank(parent: int, rank: int) -> int:
    """The pid of torchrun's worker process with RANK=``rank``."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(stat.parent.name)
    raise LookupError(f"no process with RANK={rank} under {parent}")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker through /proc")
def test_a_killed_process_stops_the_run_keeping_whole_epochs_and_resume_finishes_it(two_process_run, tmp_path):
    from cnnlab.runs import Run

    cut = Run(tmp_path / "cut")
    process = subprocess.Popen([*TORCHRUN, *JOB, "--runs-dir", str(tmp_path), "--name", "cut"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=torchrun_env())
    deadline = time.monotonic() + 300
    while not (cut.path / "last.pt").exists() or cut.checkpoint().epoch < 2:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    os.kill(child_with_rank(process.pid, 1), signal.SIGKILL)  # rank 1 dies in the middle of epoch 3 or so
    killed = time.monotonic()
    out, err = process.communicate(timeout=120)
    assert process.returncode != 0 and time.monotonic() - killed < 60
    finished = len(cut.metrics.rows())
    assert 2 <= finished < EPOCHS and cut.checkpoint().epoch == finished  # whole epochs only
    survivor, = [line for line in err.splitlines() if line.startswith("error: ")]  # then torchrun's report
    # rank 0 notices the lost peer itself, or, on a busy machine, torchrun's SIGTERM to the survivors
    # comes first (measured once with another training running): either way one line, epochs kept
    assert survivor.startswith(("error: training process 0 of 2 lost the others (", "error: terminated; "))
    assert f"; {finished} finished epoch(s) are kept in {cut.path} (continue with" in survivor
    assert survivor.endswith(f"--resume {cut.path})")

    resumed = subprocess.run([*TORCHRUN, "train", "--resume", str(cut.path)], capture_output=True, text=True,
                             env=torchrun_env(), timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    whole, = [Run(path) for path in two_process_run[0].iterdir()]
    assert learning_curve(cut) == learning_curve(whole)
