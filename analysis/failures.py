"""The ways an analysis can fail, each carrying a one-line message a person can act on."""


class InputError(ValueError):
    """The path, table or columns cannot be used at all: nothing can be fitted (the CLI exits 2)."""


class NoCompletedRuns(InputError):
    """The input is sound but none of its runs completed (all diverged or failed): the CLI exits 3, as
    the training commands do for a run that diverged or failed."""


class FitError(ValueError):
    """One approach cannot be fitted on this data; the other approaches still run."""
