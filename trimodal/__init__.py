"""Using a trained model: the `trimodal` command (cli.py), the OpenAI-compatible server and its demo page
(server.py, page.html) on one predictor (predictor.py), the evaluation in the terminal (report.py), and the model
registry with its promotion rule (registry.py)."""
