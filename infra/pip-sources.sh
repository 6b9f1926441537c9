# Sourced by infra/setup.sh and infra/lock.sh. uv reads no pip.conf: pip_sources PYTHON fills UV_SOURCES with the
# find-links and index-url pip is configured with (and exports its CA bundle), so uv sees what pip sees. Here that
# matters for torch: the CPU wheel lies in /opt/wheels (pip's find-links); without it uv would take PyPI's torch
# 2.13.0, a ~3 GB CUDA build. pip's extra-index-url (partial PyPI mirrors under /opt) is left out: for a version
# found in several indexes uv takes the first index's files only, and /opt/pypi holds soundfile's none-any wheel,
# without the libsndfile that PyPI's manylinux wheel bundles.
pip_sources() {
  UV_SOURCES=()
  local key val v
  local -A opt=()
  while IFS='=' read -r key val; do  # lines like global.find-links='/opt/wheels'; a PIP_* variable (:env:) wins
    val=${val#\'} val=${val%\'}
    [[ $key == :env:.* || -z ${opt[${key#*.}]+set} ]] && opt[${key#*.}]=$val
  done < <("$1" -m pip config list 2>/dev/null)
  for v in ${opt[find-links]-}; do UV_SOURCES+=(--find-links "$v"); done
  [ -z "${opt[index-url]-}" ] || UV_SOURCES+=(--index-url "${opt[index-url]}")
  [ -z "${opt[cert]-}" ] || export SSL_CERT_FILE="${opt[cert]}"
}
