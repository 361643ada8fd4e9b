"""A small fork server for crash tests: imports cnnlab.training once (torch takes seconds to
import), then forks one training process per request, so a test can kill hundreds of trainings
at random instants without paying for the import each time.

Protocol, one line each way: the test writes a JSON request {"runs_dir", "name", "epochs",
"stderr"}; the server forks, the child trains (a new run, or resumes it once its config.json
exists) with its stderr in the file "stderr", and the server answers the child's pid, then, when it ends, its exit status.
Forking is safe: the server itself never runs a torch operation, so no thread pool exists yet.
"""

import json
import os
import signal
import sys

from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.training import resume, train


def child(request: dict) -> int:
    fd = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 2)
    try:
        run = os.path.join(request["runs_dir"], request["name"])
        if os.path.exists(os.path.join(run, "config.json")):
            resume(run, progress="none")
        else:
            train(TrainConfig(model="mlp", epochs=request["epochs"], schedule="constant", crop_padding=1,
                              flip=True, runs_dir=request["runs_dir"], name=request["name"]), progress="none")
    except CnnlabError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return error.exit_code
    return 0


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os._exit(child(request))
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)


if __name__ == "__main__":
    main()
