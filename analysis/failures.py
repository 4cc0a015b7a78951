"""The two ways an analysis can fail, each carrying a one-line message a person can act on."""


class InputError(ValueError):
    """The path, table or columns cannot be used at all: nothing can be fitted (the CLI exits 2)."""


class FitError(ValueError):
    """One approach cannot be fitted on this data; the other approaches still run."""
