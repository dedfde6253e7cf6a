"""Worker failures, each with the exit code and error code of its row in the contract's `Failure` table."""

from __future__ import annotations

from infer.contract import EXIT_OK, Failure

# The exit statuses by name, for code that compares them (sr-models, tests).
EXIT_OTHER = Failure.OTHER.exit_code
EXIT_USAGE = Failure.USAGE.exit_code
EXIT_MODEL = Failure.MODEL.exit_code
EXIT_INTERRUPTED = Failure.INTERRUPTED.exit_code


class WorkerError(Exception):
    """A failure with a message a person can act on."""

    failure: Failure = Failure.OTHER
    exit_code: int = Failure.OTHER.exit_code
    code: str = Failure.OTHER.code

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.exit_code = cls.failure.exit_code
        cls.code = cls.failure.code

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class UsageError(WorkerError):
    failure = Failure.USAGE


class InputError(WorkerError):
    failure = Failure.BAD_INPUT


class TooLargeError(WorkerError):
    failure = Failure.TOO_MANY_PIXELS


class ModelError(WorkerError):
    failure = Failure.MODEL


class OutOfMemoryError(WorkerError):
    failure = Failure.OUT_OF_MEMORY


class OutputError(WorkerError):
    failure = Failure.OUTPUT


MODEL_HINT = (
    "download the model again (`sr-models fetch NAME`), or point --model / SR_MODEL_PATH "
    "at an intact TensorFlow .pb model such as EDSR_x3.pb"
)


def unusable_model(source: object, detail: str) -> ModelError:
    """The one message for a model file that is not a usable network, whichever reader found out how."""
    return ModelError(f"{source} is not a usable super-resolution model ({detail}); {MODEL_HINT}")


class CancelledError(WorkerError):
    """The worker was told to stop (SIGTERM); reported like any other failure (exit 1)."""

    failure = Failure.OTHER
