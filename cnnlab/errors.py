"""The errors cnnlab reports to a user as one line, each with its exit code.

Anything a user can get wrong (a model name, an input size, a data set, a run directory, a
checkpoint) raises a subclass of CnnlabError; the CLI prints ``error: <message>`` and exits
with ``exit_code``. Any other exception is a bug and keeps its traceback.
"""


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (its type's name when the message is empty): what
    a one-line report quotes from a library's multi-line error."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class CnnlabError(Exception):
    """A problem with the user's request, reported as one line."""

    exit_code = 1


class UsageError(CnnlabError):
    """A malformed option value (same exit code as a command-line usage error)."""

    exit_code = 2


class UnknownModel(CnnlabError):
    pass


class BadModelOption(UsageError):
    """A model option (``--model-arg``) or a user's model that cannot be built as asked: what
    every model constructor and the registry raise for a value they refuse."""


class InputTooSmall(CnnlabError):
    pass


class InputSizeMismatch(CnnlabError):
    """The input has a size the model cannot take (e.g. a fixed-size linear layer)."""


class UnknownDataset(CnnlabError):
    pass


class DataMissing(CnnlabError):
    pass


class DeviceUnavailable(CnnlabError):
    pass


class DoesNotFit(CnnlabError):
    """A training step's estimated peak memory is more than the device has free."""


class NotARun(CnnlabError):
    pass


class RunExists(CnnlabError):
    pass


class RunBusy(CnnlabError):
    """Another process holds the run's lock: a run has one writer at a time."""


class RunWriteFailed(CnnlabError):
    """An epoch could not be written (a full disk, say); the epochs before it are kept."""


class RunInconsistent(CnnlabError):
    """The files of a run do not add up; it is left as it is rather than repaired by deleting."""


class BadCheckpoint(CnnlabError):
    pass


class TrainingDiverged(CnnlabError):
    pass


class TrainingInterrupted(CnnlabError):
    """Ctrl-C, SIGTERM or SIGHUP during training: finished epochs are on disk and the run can
    resume. The exit code is the shell's for the signal: 130 (SIGINT), 143 (SIGTERM), 129 (SIGHUP)."""

    exit_code = 130

    def __init__(self, message: str, signal_number: int = 2):
        super().__init__(message)
        self.exit_code = 128 + signal_number


class PeerFailed(CnnlabError):
    """Training on several processes: another process died or stopped answering."""


class DataTooLarge(CnnlabError):
    """A data set that the disk cache (or memory) where it would be decoded cannot hold."""
