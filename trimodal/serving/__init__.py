"""Serving: a saved model folder answering requests (predictor.py), the OpenAI-compatible server (server.py) and
its demo page (page.html)."""
