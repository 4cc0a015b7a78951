"""User-facing errors: one line naming the field, the value and the fix; exit status 2."""

from __future__ import annotations

import sys

EXIT_BAD_INPUT = 2


class ConfigError(ValueError):
    """A configuration or input problem the user can fix; printed as one line, never a traceback."""

    def __init__(self, field: str, problem: str, fix: str = ""):
        self.field, self.problem, self.fix = field, problem, fix
        super().__init__(self.line())

    def line(self) -> str:
        fix = f"; {self.fix}" if self.fix else ""
        return f"error: {self.field}: {self.problem}{fix}"


def exit_with(err: ConfigError, debug: bool = False) -> None:
    """Print the one-line message and exit 2; re-raise instead when debugging."""
    if debug:
        raise err
    print(err.line(), file=sys.stderr)
    raise SystemExit(EXIT_BAD_INPUT)
