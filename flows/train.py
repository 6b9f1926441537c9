"""Flow `train`: every dvc.yaml stage as one Prefect task, in DVC's order; DVC skips what is unchanged.

    python -m flows.train                                  # one run, here, against the configured server
    prefect deployment run train/full -p overrides='["pretrain.steps=3"]'
Parameters: Hydra overrides applied to params.yaml first, force_ingest (re-fetch the sources), push (dvc push
afterwards). The evaluation table and reports/report.md are published as Prefect artifacts.
"""
from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.dvc_stages import apply_overrides, dvc, run_stage, stage_order

RETRIES = {"ingest": 2}  # sources are remote: a flaky fetch is worth another try


@task(task_run_name="{stage}")
def dvc_stage(root: str, stage: str, force: bool = False) -> str:
    output = run_stage(root, stage, force=force)
    print(output.strip().splitlines()[-1] if output.strip() else f"{stage}: done")
    return output


@task
def publish(root: str) -> None:
    root_path = Path(root)
    rows = []
    for path in sorted((root_path / "metrics/eval").glob("*.json")):
        scores = json.loads(path.read_text())
        rows.append({"variant": path.stem, **{k: round(v, 4) if isinstance(v, float) else v
                                             for k, v in scores.items()}})
    if rows:
        create_table_artifact(key="trimodal-eval", table=rows, description="metrics/eval/*.json")
    report = root_path / "reports/report.md"
    if report.exists():
        create_markdown_artifact(key="trimodal-report", markdown=report.read_text(), description=str(report))


@flow(name="train", log_prints=True)
def train(overrides: list[str] | None = None, force_ingest: bool = False, push: bool = False,
          root: str = ".") -> list[str]:
    """Run the DAG stage by stage; the first failing stage fails the flow and nothing after it runs."""
    if overrides:
        apply_overrides(root, overrides)
    stages = stage_order(root)
    for stage in stages:
        dvc_stage.with_options(retries=RETRIES.get(stage, 0), retry_delay_seconds=10)(
            root, stage, force=force_ingest and stage == "ingest")
    publish(root)
    if push:
        print(dvc(root, "push"))
    return stages


if __name__ == "__main__":
    train()
