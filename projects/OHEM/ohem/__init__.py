"""OHEM for detkit: the ``OHEMSampler`` (registered in ``SAMPLER_REGISTRY`` on import) and its
config keys (:func:`add_ohem_config`)."""

from .config import add_ohem_config
from .sampler import OHEMSampler, select_hard_examples

__all__ = ["OHEMSampler", "add_ohem_config", "select_hard_examples"]
