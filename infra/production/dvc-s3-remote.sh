#!/usr/bin/env bash
# Make an S3 bucket the default DVC remote: bash infra/production/dvc-s3-remote.sh s3://bucket/prefix [endpoint]
# Credentials come from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or an instance role),
# never from .dvc/config. The endpoint (MinIO, Ceph, a local moto) is kept in .dvc/config.local.
set -euo pipefail
url=${1:?usage: dvc-s3-remote.sh s3://bucket/prefix [endpoint-url]}
dvc remote add --force --default s3 "$url"
if [ -n "${2:-}" ]; then dvc remote modify --local s3 endpointurl "$2"; fi
dvc remote list
