"""detkit: a modular Fast R-CNN object-detection framework built on PyTorch."""

__version__ = "0.1.0"

# Each of these packages registers its up-front config checks when imported
# (detkit.config.register_config_check); importing them here makes check_config run them
# whichever detkit module a program imports first. detkit.config imports none of them.
from . import data, evaluation, modeling, solver  # noqa: F401
