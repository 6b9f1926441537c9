"""Prefect flows that run the dvc.yaml stages (issue #6); thin by design: the DAG lives in dvc.yaml."""
