"""Using a trained model: the `trimodal` command (cli.py), the OpenAI-compatible server and its demo page
(server.py, page.html), on one predictor (predictor.py)."""
