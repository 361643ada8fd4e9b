"""Starting cnnlab in a child process the same way however the suite itself was started.

A script that runs ``pytest &`` starts it with SIGINT ignored, and children inherit that: a
Ctrl-C test would then never reach its child. Every child here starts with the default
dispositions of SIGINT, SIGTERM and SIGHUP (nohup ignores it), as it would from a terminal.
"""

import signal
import subprocess
import sys


def default_signals() -> None:
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)


def start(args, **options) -> subprocess.Popen:
    """``args`` run with this Python (e.g. ["-m", "cnnlab", "train", ...]), pipes as text."""
    return subprocess.Popen([sys.executable, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=default_signals, **options)
