"""The project's exception classes: one base, one subclass per kind of mistake."""


class InitlabError(Exception):
    """Base class for every error initlab raises on purpose."""


class ConfigError(InitlabError):
    """A config, an override or a command-line value is wrong (exit code 2)."""


class DataError(InitlabError):
    """A data set is missing, corrupted or cannot be built."""


class EngineError(InitlabError):
    """Wrong shapes, unknown names or impossible values given to the engine."""


class RuntimeStateError(InitlabError):
    """The world is not in a state that lets the command go on: a sweep's lock is held by another
    process, a Dask scheduler cannot be reached. Not a mistake in the config, but the command line
    reports it like one (exit code 2): nothing ran, and the same command can simply be retried."""


def describe(error: BaseException) -> str:
    """The one-line message for an error: initlab's own errors speak for themselves; anything else
    (a bug, an OS error) is named by its class so that it can be reported."""
    return str(error) if isinstance(error, InitlabError) else f"{type(error).__name__}: {error}"


def unknown_name(kind: str, name: str, choices) -> str:
    """Message for an unknown registry name, with the closest valid choice."""
    import difflib

    choices = sorted(choices)
    close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (choose from: {', '.join(choices)})"
    return f"unknown {kind} '{name}'{hint}"


def short(value, limit: int = 60) -> str:
    """``value`` for an error message: printable, and cut to ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def seconds_from_env(env: str, default: float, error: type = None) -> float:
    """A deadline in seconds from the environment variable ``env`` (``default`` when unset or blank);
    anything but a number in (0, 86400) raises ``error`` (a :class:`ConfigError` unless given)."""
    import os

    text = os.environ.get(env, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 86_400:  # also refuses NaN
        raise (error or ConfigError)(f"{env}: expected a number of seconds > 0, got {short(text)!r}")
    return value


def check_number(name: str, value, lo: float = float("-inf"), hi: float = float("inf"), *,
                 lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` as a float inside ``[lo, hi]`` (``(`` / ``)`` where open), else an :class:`EngineError`.

    NaN, booleans and non-numbers are refused with a message naming ``name``.
    """
    if isinstance(value, bool):
        raise EngineError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError) as e:
        raise EngineError(f"{name} must be a number, got {value!r}") from e
    above = v > lo if lo_open else v >= lo
    below = v < hi if hi_open else v <= hi
    if not (above and below):  # also catches NaN
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise EngineError(f"{name} must be in {interval}, got {value!r}")
    return v


def check_size(name: str, value) -> int:
    """``value`` as a positive int (an integral float such as 100.0 is accepted), else an :class:`EngineError`."""
    try:
        n = int(value)
        ok = not isinstance(value, bool) and n == value and n >= 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise EngineError(f"{name} must be a positive integer, got {value!r}")
    return n
