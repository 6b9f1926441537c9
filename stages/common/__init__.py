"""The pipeline's own code, beside the stages: params.yaml composed from conf/ and checked (params.py), and dvc.yaml's
code deps written from the stages' imports (code_deps.py). What the stages share otherwise is the library's
(trimodal/)."""
