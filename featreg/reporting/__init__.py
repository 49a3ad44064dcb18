"""Reporting: tables, figures and one self-contained HTML report from the metrics table."""
