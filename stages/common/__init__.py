"""Code shared by several stages: typed params, atomic writes, canonical tars, media decoding, the loader."""
