"""The DAG stages of dvc.yaml, one module each (`python -m stages.<name>`)."""
import os

# backbones and tokenizers load from local folders only: a missing folder must fail at once with its path, not be
# taken for a hub id and retried over the network (set HF_HUB_OFFLINE=0 yourself to allow the hub)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

