"""Registration engine: batched B-spline FFD with image, feature and diffusion terms."""

from featreg.registration.optimize import LOSS_COLUMNS, RegistrationResult, register_pairs
from featreg.registration.settings import RegistrationSettings

__all__ = ["LOSS_COLUMNS", "RegistrationResult", "RegistrationSettings", "register_pairs"]
