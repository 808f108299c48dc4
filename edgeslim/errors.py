"""The EdgeslimError family: every error a user can cause, with what to do about it.

The CLI turns any EdgeslimError into a one-paragraph message and exit code 2
(no traceback unless --debug). Never use ``assert`` to validate user input.
"""

from __future__ import annotations


class EdgeslimError(Exception):
    """An error the user can act on. ``hint`` says what to do."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n{self.hint}"
        return self.message


class ModelLoadError(EdgeslimError):
    """The model file is missing, corrupt, unsafe, or has a layer we cannot map."""


class ModelFormatError(ModelLoadError):
    """The bytes are not a readable TFLite model: not a .tflite at all, or a corrupt or
    hand-edited one (an index out of range, a buffer of the wrong size). Raised by the one
    reader, edgeslim.modelgraph, for every module that reads a .tflite."""


class DataError(EdgeslimError):
    """The data set is missing, malformed, or does not fit the model."""


class RecipeError(EdgeslimError):
    """The recipe (TOML or flags) is invalid."""


class TargetError(EdgeslimError):
    """Unknown target, malformed profile, or a model that does not fit the target."""


class ConversionError(EdgeslimError):
    """The model could not be converted to a fully-integer TFLite model."""


class CodegenError(EdgeslimError):
    """The C code generator cannot handle this model."""


class DeviceError(EdgeslimError):
    """A device, emulator or serial link did not behave."""


class OutputError(EdgeslimError):
    """The output location cannot be written, or holds something edgeslim may not replace."""
