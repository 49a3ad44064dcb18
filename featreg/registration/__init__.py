"""Registration engines: batched B-spline FFD with image, feature and diffusion terms; elastix beside it.

The FFD's entry points load on first use (PEP 562), so that the workflow can check
method settings (:mod:`featreg.registration.elastix`) at parse time without torch.
"""

import importlib

_EXPORTS = {
    "LOSS_COLUMNS": "featreg.registration.optimize",
    "RegistrationResult": "featreg.registration.optimize",
    "register_pairs": "featreg.registration.optimize",
    "RegistrationSettings": "featreg.registration.settings",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
