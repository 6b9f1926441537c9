"""infra/requirements.lock, the environment infra/setup.sh installs, agrees with pyproject.toml and with .venv.

A failure here means a pin changed without the lock: run `bash infra/lock.sh`, then `bash infra/setup.sh`.
"""

import re
import tomllib
from importlib.metadata import distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "infra" / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", re.M)


def locked_versions(lock_text: str) -> dict[str, str]:
    """{normalised name: version} of every `name==version` line of a requirements lock."""
    return {canonicalize_name(name): version for name, version in PIN.findall(lock_text)}


def direct_requirements(pyproject: dict) -> list[Requirement]:
    """What infra/lock.sh locks: the dependencies, the [dev] extra and build-system.requires."""
    project = pyproject["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["dev"] + pyproject["build-system"]["requires"]
    return [Requirement(line) for line in lines]


def not_in_lock(requirements: list[Requirement], locked: dict[str, str]) -> list[str]:
    """The requirements the lock misses or pins to a version outside their specifier."""
    return [
        str(req)
        for req in requirements
        if not req.specifier.contains(locked.get(canonicalize_name(req.name), "0.dev0"), prereleases=True)
    ]


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_pyproject_pin_is_locked_at_its_version():
    assert not_in_lock(direct_requirements(pyproject()), locked_versions(LOCK.read_text())) == []


def test_a_pin_changed_without_relocking_is_reported():
    project = pyproject()
    project["project"]["dependencies"] = ["prefect==3.9.0", "torch==2.13.0", "img2dataset>=2"]
    project["project"]["optional-dependencies"]["dev"] = ["not-in-the-lock==1.0"]
    missed = not_in_lock(direct_requirements(project), locked_versions(LOCK.read_text()))
    assert missed == ["prefect==3.9.0", "img2dataset>=2", "not-in-the-lock==1.0"]


def test_every_locked_package_has_a_hash():
    blocks = re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text())
    unhashed = [b.split()[0] for b in blocks if PIN.match(b) and "--hash=sha256:" not in b]
    assert unhashed == []


def test_torch_is_the_cpu_build_and_the_dataclasses_backport_is_left_out():
    # PyPI's torch 2.13.0 is a ~3 GB CUDA build; dataclasses==0.6 breaks Prefect's server (infra/setup.sh).
    locked = locked_versions(LOCK.read_text())
    assert locked["torch"].endswith("+cpu")
    assert "dataclasses" not in locked


def test_installed_versions_are_the_locked_ones():
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}
    drifted = {
        name: (version, installed.get(name))
        for name, version in locked_versions(LOCK.read_text()).items()
        if installed.get(name) != version
    }
    assert drifted == {}, "(locked, installed): rerun `bash infra/setup.sh`"
