"""Worker failures, each with the exit code and error code the front end relies on."""

from __future__ import annotations

EXIT_OK = 0
EXIT_OTHER = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_TOO_LARGE = 4
EXIT_MODEL = 5
EXIT_OOM = 6
EXIT_OUTPUT = 7


class WorkerError(Exception):
    """A failure with a message a person can act on."""

    exit_code = EXIT_OTHER
    code = "internal_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class UsageError(WorkerError):
    exit_code = EXIT_USAGE
    code = "usage"


class InputError(WorkerError):
    exit_code = EXIT_BAD_INPUT
    code = "bad_input"


class TooLargeError(WorkerError):
    exit_code = EXIT_TOO_LARGE
    code = "too_many_pixels"


class ModelError(WorkerError):
    exit_code = EXIT_MODEL
    code = "model_error"


class OutOfMemoryError(WorkerError):
    exit_code = EXIT_OOM
    code = "out_of_memory"


class OutputError(WorkerError):
    exit_code = EXIT_OUTPUT
    code = "output_error"


MODEL_HINT = (
    "download the model again (`sr-models fetch NAME`), or point --model / SR_MODEL_PATH "
    "at an intact TensorFlow .pb model such as EDSR_x3.pb"
)


def unusable_model(source: object, detail: str) -> ModelError:
    """The one message for a model file that is not a usable network, whichever reader found out how."""
    return ModelError(f"{source} is not a usable super-resolution model ({detail}); {MODEL_HINT}")


class CancelledError(WorkerError):
    """The worker was told to stop (SIGTERM); reported like any other failure (exit 1)."""

    exit_code = EXIT_OTHER
    code = "internal_error"
