"""Data: ACDC reader, synthetic cohort, preprocessing into fixed/moving pairs."""

LABELS: dict[int, str] = {1: "RV", 2: "Myo", 3: "LV"}
