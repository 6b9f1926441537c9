"""The DAG stages of dvc.yaml, one module each (`python -m stages.<name>`)."""
