#!/usr/bin/env bash
# Make an S3 bucket the default DVC remote: bash infra/production/dvc-s3-remote.sh s3://bucket/prefix [endpoint]
# The remote goes into .dvc/config: commit and push it, and every stage's clone uses it. Credentials come from the
# environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or an instance role), never from .dvc/config. The endpoint
# (MinIO, Ceph, a local moto) is kept in this checkout's .dvc/config.local, which clones do not get: workers take it
# from AWS_ENDPOINT_URL, which dvc-s3 reads itself.
set -euo pipefail
url=${1:?usage: dvc-s3-remote.sh s3://bucket/prefix [endpoint-url]}
dvc remote add --force --default s3 "$url"
if [ -n "${2:-}" ]; then
  dvc remote modify --local s3 endpointurl "$2"
  echo "workers: export AWS_ENDPOINT_URL=$2"
fi
dvc remote list
