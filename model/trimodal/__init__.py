"""The trimodal family (docs/model.md "Architecture"): its config (configuration.py), the network (modeling.py and
its encoders, fusion, reasoning core and decoders), pretrained encoders (pretrained.py), the pretraining objectives
(objectives.py, visual_tokenizer.py), its training steps (tasks.py) and the family behind the `Family` interface
(family.py)."""
