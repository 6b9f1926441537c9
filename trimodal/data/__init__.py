"""The data: records and their splits (records.py), fetching sources (sources.py, fetch.py, fileserver.py, spool.py),
decoding media (media.py), content identity (dedup.py), the validate gate (gate.py), features (features.py),
canonical tar shards (tars.py), the shard loader (loader.py) and the batch transforms of training (batches.py)."""
