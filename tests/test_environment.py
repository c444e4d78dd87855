"""The two ways to set up agree: pyproject.toml (pip, ./workbench) and environment.yml (conda)."""

import os
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def normalise(requirement: str) -> str:
    """Drop spaces and unify quotes, so `a==1; b == 'x'` equals `a==1;b=="x"`."""
    return "".join(requirement.split()).replace('"', "'")


def pyproject_pins() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["test"]]


def conda_env() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def conda_pip_pins() -> list[str]:
    (pip_section,) = [d["pip"] for d in conda_env()["dependencies"] if isinstance(d, dict)]
    return pip_section


def test_environment_yml_pins_exactly_what_pyproject_pins():
    pip_pins = sorted(map(normalise, conda_pip_pins()))
    project_pins = sorted(map(normalise, pyproject_pins()))
    assert pip_pins == project_pins, (
        "environment.yml's pip section and pyproject.toml (dependencies + test extras) differ; "
        f"only in environment.yml: {sorted(set(pip_pins) - set(project_pins))}, "
        f"only in pyproject.toml: {sorted(set(project_pins) - set(pip_pins))}"
    )


def test_every_dependency_is_pinned_to_one_version():
    loose = [r for r in pyproject_pins() if "==" not in r.split(";")[0]]
    assert not loose, f"pin these with == so every setup gets the same versions: {loose}"


def test_conda_python_matches_requires_python():
    conda_deps = [d for d in conda_env()["dependencies"] if isinstance(d, str)]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "python=3.11" in conda_deps and "pip" in conda_deps
    assert project["requires-python"] == ">=3.11"


def test_front_door_scripts_are_executable():
    for script in ("workbench", ".ci/run"):
        assert os.access(ROOT / script, os.X_OK), f"{script} lost its executable bit (chmod +x)"
