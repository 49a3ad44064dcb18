"""Registration engine: batched B-spline FFD with image, feature and diffusion terms.

Settings (:mod:`.settings`) import no torch, so a config is checked cheaply; the engine is
:func:`featreg.registration.optimize.register_pairs`.
"""
