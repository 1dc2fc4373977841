"""User-facing errors: bad input is reported as one line and exit code 2."""

from __future__ import annotations

import difflib
import sys
import traceback
from collections.abc import Iterable


def one_line(message: str) -> str:
    """Escape line breaks and other control characters that user input may carry into a message."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


class UserError(Exception):
    """Bad input (config, command line, files). The CLI prints the message and exits with code 2.

    The message is always one line: control characters from user input are escaped.
    """

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class TrainingStopped(Exception):
    """Training stopped early (a signal, non-finite values) after writing a checkpoint."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def closest(name: str, choices: Iterable[str]) -> str:
    """Return a ``" (did you mean 'x'?)"`` suffix for the closest valid choice, or ``""``.

    A near spelling wins (``gama`` → ``gamma``); failing that, an abbreviation that matches one
    choice only: its initials (``lr`` → ``learning_rate``) or a prefix (``explo`` → ``exploration_…``
    only if unique).
    """
    valid = [str(c) for c in choices]
    match = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    if match:
        return f" (did you mean '{match[0]}'?)"
    key = name.lower().replace("-", "_")
    if len(key) >= 2:
        for candidates in (
            [c for c in valid if "_" in c and "".join(w[:1] for w in c.lower().split("_")) == key],
            [c for c in valid if c.lower().startswith(key)],
        ):
            if len(candidates) == 1:
                return f" (did you mean '{candidates[0]}'?)"
    return ""


def unknown(kind: str, name: str, choices: Iterable[str], hint: str = "") -> UserError:
    """Build the standard 'unknown X' error naming the valid choices (and ``hint``, if given)."""
    valid = sorted(choices)
    suffix = f"; {hint}" if hint else ""
    return UserError(f"unknown {kind} '{name}'{closest(name, valid)}; valid: {', '.join(valid)}{suffix}")


def exception_text(exc: BaseException) -> str:
    """``"Type: message"`` (just ``"Type"`` for an exception without a message)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def describe_exception(exc: BaseException) -> str:
    """``"Type: message (file:line)"`` naming where ``exc`` was raised, for one-line errors about user code."""
    text = exception_text(exc)
    if isinstance(exc, SyntaxError):
        return text  # its message already names the file and line
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<frozen")]
    if frames:
        text += f" ({frames[-1].filename}:{frames[-1].lineno})"
    return text


#: Top-level packages whose code is rlplast's or a library's it drives: an exception raised with
#: none of the user's code on the stack is a bug there (a traceback), not bad input.
LIBRARY_PACKAGES = frozenset(
    {
        "rlplast",
        "gymnasium",
        "stable_baselines3",
        "torch",
        "numpy",
        "scipy",
        "sklearn",
        "pandas",
        "matplotlib",
        "tensorboard",
        "yaml",
        "ray",
        "minatar",
        "cloudpickle",
        "_pytest",
        "pytest",
        "pluggy",
        "__main__",
    }
)


def user_frame(exc: BaseException) -> traceback.FrameSummary | None:
    """The innermost frame of ``exc``'s traceback that runs the user's code — a module outside
    rlplast, the libraries it drives (:data:`LIBRARY_PACKAGES`) and the standard library, such as
    the module of a user's env, intervention or plugin — or None."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        top = module.partition(".")[0]
        if top and top not in LIBRARY_PACKAGES and top not in sys.stdlib_module_names:
            found = tb
        tb = tb.tb_next
    if found is None:
        return None
    return traceback.extract_tb(found, limit=1)[0]


def user_code_error(exc: BaseException, context: str) -> UserError | None:
    """A one-line :class:`UserError` for an exception the user's code raised (see :func:`user_frame`),
    or None when none of the user's code is on its stack.

    Args:
        exc: the exception.
        context: what was running, e.g. ``"training stopped at step 1200"``; ends the message.
    """
    frame = user_frame(exc)
    if frame is None:
        return None
    return UserError(
        f"your code raised {exception_text(exc)} (in {frame.name}, {frame.filename}:{frame.lineno}); {context}"
    )
