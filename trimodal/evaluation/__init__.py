"""Evaluation: predictions on a split (predict.py), generation (generation.py), the scores (scoring.py), the baselines
(baselines.py), latency (latency.py) and the report in the terminal (report.py)."""
