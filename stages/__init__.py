"""The DAG stages of dvc.yaml, one module each (`python -m stages.<name>`)."""
# the library sets its offline default (HF_HUB_OFFLINE=1, trimodal/__init__.py) on import; a stage imports
# transformers before trimodal, so the package imports it first
import trimodal  # noqa: F401
