"""One command-line style for every analysis command: argparse whose errors are one line, and one
way to turn bad input into `error: ...` on stderr with exit status 2 (never a traceback)."""

import argparse
import sys
from collections.abc import Callable

from analysis.failures import InputError, NoCompletedRuns
from scaling.errors import EXIT_BAD_INPUT, EXIT_RUN_FAILED, ConfigError, Interrupted
from scaling.files import finite_or_none as finite_or_none  # (the fit commands' JSON, written by the same rule)


def run(
    main: Callable[[argparse.Namespace], int], args: argparse.Namespace, setup: Callable[[], object] | None = None
) -> int:
    """Call `setup()` (the process set-up, which reads the environment) then `main(args)`; bad input (ours,
    or a training-side ConfigError) becomes one line and exit 2, runs none of which completed exit 3, Ctrl-C
    130 (scaling/errors.py has the table)."""
    try:
        if setup is not None:
            setup()
        return main(args)
    except NoCompletedRuns as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
    except ConfigError as error:
        print(error.line(), file=sys.stderr)
    except KeyboardInterrupt:
        print(Interrupted("every table, figure and report is written whole or not at all").line(), file=sys.stderr)
        return Interrupted.exit_code
    return EXIT_BAD_INPUT


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (exit 2), like every other input error here."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)
