"""featreg: vision-encoder features as guidance in B-spline FFD registration, at cohort scale."""

__version__ = "0.1.0"
