"""What train/full publishes about the model cards (flows/train.py): which cards the run's dvc.lock records, for
the model artifacts dvc.yaml names, and an index of them. Kept apart from the flow so it imports no Prefect."""
from __future__ import annotations

from pathlib import Path

from flows.dvc_stages import lock_outs
from trimodal.cards import CARD
from trimodal.registry import artifacts


def card_outs(root: Path) -> list[dict]:
    """Each model artifact of dvc.yaml whose card dvc.lock records: artifact, card path, md5."""
    recorded = {out["out"]: out["md5"] for out in lock_outs(root)}
    cards = [{"artifact": name, "card": f"{path}/{CARD}"} for name, path in artifacts(root).items()]
    return [{**row, "md5": recorded[row["card"]]} for row in cards if row["card"] in recorded]


def cards_index(cards: list[dict], revision: str, repo_url: str) -> str:
    lines = [f"Model cards of revision `{revision}` ({repo_url}). Each is also its own artifact "
             "`trimodal-card-<model>`.", "", "| model | card | md5 | get this model |", "| --- | --- | --- | --- |"]
    lines += [f"| {row['artifact']} | `{row['card']}` | `{row['md5']}` | "
              f"`git checkout {revision[:12]} && dvc pull {row['card']}` (card), "
              f"`dvc artifacts get {repo_url} {row['artifact']} --stage prod` (production) |" for row in cards]
    return "\n".join(lines) + "\n"

