"""Using a trained model: the `trimodal` command (cli.py), the OpenAI-compatible server and its demo page
(server.py, page.html) on one predictor (predictor.py), the evaluation in the terminal (report.py), and the model
registry with its promotion rule (registry.py)."""
import os

# backbones and tokenizers load from local folders only: a missing folder must fail at once with its path, not be
# taken for a hub id and retried over the network (set HF_HUB_OFFLINE=0 yourself to allow the hub)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

