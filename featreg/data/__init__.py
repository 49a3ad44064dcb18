"""Data: ACDC reader, manifest cohorts, synthetic cohort, preprocessing into fixed/moving pairs."""

LABELS: dict[int, str] = {1: "RV", 2: "Myo", 3: "LV"}
"""ACDC's label classes (value -> name), the default of the config's ``labels``."""
