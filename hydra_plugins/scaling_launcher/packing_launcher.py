"""Registers `hydra/launcher=packed` with Hydra.

Hydra only instantiates launchers whose class lives in the `hydra_plugins` namespace package, so
this module names the launcher there; the launcher itself is `scaling/sweeping/launcher.py`.
"""

from scaling.sweeping.launcher import PackingLauncher as _PackingLauncher


class PackingLauncher(_PackingLauncher):
    """Hydra's basic launcher, except that runs of one shape train together (scaling/sweeping/launcher.py)."""
