"""openrlhf-drirl: DR-IRL (HAIR, arXiv 2503.18991) for OpenRLHF.

``register()`` installs the plugin into OpenRLHF in the current process; ``python -m openrlhf_drirl.cli.train_ppo_ray``
does it in every Ray worker. Importing this package imports nothing heavy.
"""

from openrlhf_drirl.plugin import register

__version__ = "0.1.0"
__all__ = ["register"]
