"""Registers `hydra/launcher=local` (and its old name, `packed`) with Hydra.

Hydra only instantiates launchers whose class lives in the `hydra_plugins` namespace package, so
this module names the launcher there; the launcher itself is `scaling/sweeping/launcher.py`.
"""

from scaling.sweeping.launcher import LocalLauncher as _LocalLauncher


class LocalLauncher(_LocalLauncher):
    """A sweep on this machine: runs side by side on CPU cores, packed on accelerators (scaling/sweeping/launcher.py)."""
