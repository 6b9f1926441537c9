"""Training: the loop every training stage runs (trainer.py: `fit`), its checkpoints (checkpoint.py), data-parallel and
sharded runs (distributed.py), throughput (mfu.py) and the saved model folder (models.py). What a step computes is
the model family's (trimodal.model.<family>.tasks)."""
