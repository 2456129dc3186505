"""The image built with Podman once per test session, for every container test that needs it."""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.deploy.podman import Build, build_image, podman, report


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Build]:
    if os.geteuid() != 0:
        message = "the container tests run rootful Podman: run them as root"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: CI must run them)", pytrace=False)
        pytest.skip(message)
    build = build_image(tmp_path_factory.mktemp("podman"))
    report(base_image_s=build.base_s, build_s=build.build_s)
    yield build
    if os.environ.get("CI", "").lower() == "true":  # gigabytes of layers the tests after these need not share a disk with
        podman("rmi", "--force", build.image, check=False)
        podman("image", "prune", "--force", check=False)
