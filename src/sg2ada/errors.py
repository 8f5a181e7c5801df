"""User-facing errors.

A UserError is bad input that the user can fix (a wrong file, an impossible option). The CLI prints
its message as one line, `error: ...`, and exits with status 2 instead of showing a traceback, so
every message must name the file or option at fault and say what to do.
"""


class UserError(Exception):
    """Bad input the user can fix; the message is shown as one line, without a traceback."""

    exit_code = 2


class Stopped(UserError):
    """SIGTERM or SIGINT before a command had anything to save (training saves, then exits 3 itself)."""

    exit_code = 3
