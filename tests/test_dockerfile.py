"""The Dataflow worker image's Dockerfile agrees with this environment and the package (it is not built here:
no container engine in the test environment)."""

from __future__ import annotations

import os
import re
import sys

import apache_beam

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(name: str) -> str:
    with open(os.path.join(REPO, name), encoding="utf-8") as handle:
        return handle.read()


def test_base_image_matches_the_launchers_python_and_beam():
    image = re.search(r"^FROM (\S+)", _read("Dockerfile"), re.M).group(1)
    assert image == f"apache/beam_python{sys.version_info[0]}.{sys.version_info[1]}_sdk:{apache_beam.__version__}"


def test_image_copies_every_package_and_pins_cpu_torch():
    dockerfile = _read("Dockerfile")
    for package in ("pipelines", "transforms", "schemas", "trainer", "audit", "storage"):
        assert f"COPY {package} ./{package}" in dockerfile, package
    assert "download.pytorch.org/whl/cpu torch==" in dockerfile
    assert "wordnet-base" in dockerfile and "HF_HUB_OFFLINE=1" in dockerfile


def test_readme_dataflow_command_names_the_image():
    readme = _read("README.md")
    section = readme[readme.index("## Running on Dataflow") :]
    assert "--sdk_container_image" in section.split("```")[1]
