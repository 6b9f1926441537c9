"""The DeepSeek-VL family (docs/model.md "DeepSeek-VL"): the config and network (modeling.py), the hybrid vision
encoder (hybrid_vision.py) and adaptor (vl_adaptor.py), local checkpoints (pretrained.py), its chat-turn tasks
(tasks.py) and the family behind the `Family` interface (family.py)."""
