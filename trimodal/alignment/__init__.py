"""Alignment: instruction turns and their tasks (instructions.py, instruction_tasks.py), preference pairs (pairs.py)
and the responses a model gives and is scored on (responses.py)."""
