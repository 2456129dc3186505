"""The shipped image, built and run for real with Podman (no Docker engine here): it builds from the Dockerfile with
CUDA-capable torch, runs as its non-root user, turns healthy by its own HEALTHCHECK, answers README's example,
serves a model folder written on the host and mounted read-only, and drains on `podman stop` under load.

The base image is made from Debian's packages (see tests/deploy/podman.py); the Dockerfile is otherwise the shipped
one, and the container runs the image's own command. Needs root and the Debian packages podman, runc and mmdebstrap
(.ci/run installs them)."""
from __future__ import annotations

import hashlib
import json
import random
import re
import subprocess
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from app.config import Settings
from tests.deploy.podman import (
    Build,
    Container,
    podman,
    report,
    running,
    wait_healthy,
    wait_ready,
)
from tests.deploy.support import COMPOSE_FILE, ROOT, dockerfile, exec_form, final_stage
from tests.helpers import LABELS, write_tiny_artifact
from tests.test_shipped_model import readme_example, readme_files

pytestmark = [
    pytest.mark.slow,
    pytest.mark.needs_tool("podman"),
    pytest.mark.needs_tool("runc"),
    pytest.mark.needs_tool("mmdebstrap"),
]

# torch 2.14.1's CUDA 13 wheels and their NVIDIA libraries are 5.7 GiB installed: the budget leaves room for the
# base image and a little growth, and catches a second copy of the environment, a pip cache or build tools.
IMAGE_BUDGET_BYTES = 7_000_000_000
# Everything the runtime stage adds besides the dependencies: the service's wheel, the default model, the user.
RUNTIME_EXTRA_BUDGET_BYTES = 20_000_000
# `podman stop` waits as long as docker-compose.yml gives the service to drain before it kills it.
DRAIN_DELAY_S = Settings.model_fields["drain_delay_s"].default  # the image sets none: the service's default
STOP_TIMEOUT_S = int(yaml.safe_load(COMPOSE_FILE.read_text())["services"]["fusion-serve"]["stop_grace_period"]
                     .removesuffix("s"))


@pytest.fixture(scope="module")
def default_model(built: Build) -> Iterator[Container]:
    """The image as shipped: its baked-in default model, its own command."""
    with running(built.image) as container:
        yield container


# The service's installed modules, by path relative to the package, with a digest of each (run in the image).
APP_DIGEST = """
import hashlib, json, pathlib, app
root = pathlib.Path(app.__file__).parent
print(json.dumps({str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                  for p in sorted(root.rglob("*.py"))}))
"""


def app_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.py"))}


def image_user() -> str:
    (user,) = [i.args for i in final_stage(dockerfile()) if i.keyword == "USER"]
    return user


def process_uid(container: Container) -> int:
    """The real uid of the container's main process (the image's command)."""
    status = container.exec("cat", "/proc/1/status", check=True).stdout
    return int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))


def test_the_image_builds_with_cuda_torch_runs_as_non_root_and_stays_in_its_budget(built: Build) -> None:
    (image,) = json.loads(podman("image", "inspect", built.image).stdout)
    config = image["Config"]
    assert config["User"] == image_user() and not config["User"].startswith("0")
    assert config["Cmd"] == exec_form(next(i.args for i in final_stage(dockerfile()) if i.keyword == "CMD"))
    (declared,) = [i.args for i in final_stage(dockerfile()) if i.keyword == "HEALTHCHECK"]
    # Kept only in the docker image format (the OCI format has no health check).
    assert image["Healthcheck"]["Test"] == ["CMD", *exec_form(declared.split(" CMD ", 1)[1])]
    probe = "import torch, torchvision; print(torch.__version__, torch.version.cuda, torchvision.__version__)"
    result = podman("run", "--rm", "--pull=never", "--network", "none", built.image, "python", "-c", probe)
    torch_version, cuda, vision = result.stdout.split()
    pins = dict(d.split("==") for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
                if "==" in d)
    assert torch_version.split("+")[0] == pins["torch"] and vision.split("+")[0] == pins["torchvision"]
    assert cuda != "None", "torch in the image is a CUDA build"
    # This checkout's code, not a layer cached from an earlier build.
    listing = podman("run", "--rm", "--pull=never", "--network", "none", built.image, "python", "-c", APP_DIGEST)
    assert json.loads(listing.stdout) == app_digests(ROOT / "app")
    uid = podman("run", "--rm", "--pull=never", "--network", "none", built.image, "id", "-u").stdout.strip()
    assert uid == image_user().split(":")[0] != "0"

    size = int(image["Size"])
    base = int(json.loads(podman("image", "inspect", built.base).stdout)[0]["Size"])
    layers = json.loads(podman("history", "--format", "json", built.image).stdout)
    venv = max(h["size"] for h in layers if "--requirement" in h["CreatedBy"])  # the dependency layer
    report(image_gb=size / 1e9, dependencies_gb=venv / 1e9, runtime_extra_mb=(size - base - venv) / 1e6)
    assert size < IMAGE_BUDGET_BYTES
    assert size - base - venv < RUNTIME_EXTRA_BUDGET_BYTES


def test_the_container_turns_healthy_by_its_own_check_and_answers_readmes_example(default_model: Container) -> None:
    healthy_s = wait_healthy(default_model)
    ready_s = wait_ready(default_model)
    report(healthy_s=healthy_s, ready_s=ready_s)
    assert process_uid(default_model) == int(image_user().split(":")[0])
    # Compose's health check (readiness) works inside the image too.
    test = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["fusion-serve"]["healthcheck"]["test"]
    assert test[0] == "CMD" and default_model.exec(*test[1:]).returncode == 0

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    calling = readme.split("## Calling the API", 1)[1].split("\n## ", 1)[0]
    curl = re.search(r"```bash\n(.+?)\n```", calling, flags=re.S).group(1)
    assert "http://localhost:8000/" in curl
    answer = subprocess.run(["bash", "-c", curl.replace("http://localhost:8000/", f"{default_model.url}/")],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    body = json.loads(answer.stdout)
    want = readme_example()["top"][0]
    assert body["top"][0]["label"] == want["label"]
    assert round(body["top"][0]["probability"], 2) == round(want["probability"], 2)


def test_a_model_folder_written_on_the_host_is_served_read_only_by_the_non_root_user(
    built: Build, tmp_path: Path
) -> None:
    models = tmp_path / "my-models"
    models.mkdir(mode=0o755)
    models.chmod(0o755)  # as a user's folder would be (pytest makes its own folders private)
    write_tiny_artifact(models / "tiny")  # the artifact writer `fusion-serve train` uses
    # README's form: -v "$PWD/my-models:/srv/fusion/models:ro"
    with running(built.image, "--volume", f"{models}:/srv/fusion/models:ro") as container:
        wait_ready(container)
        assert process_uid(container) != 0
        with httpx.Client(base_url=container.url, timeout=30) as c:
            listed = c.get("/v1/models").json()
            assert [m["name"] for m in listed["models"]] == ["tiny"], listed
            r = c.post("/v1/predict", files=readme_files())
            assert r.status_code == 200, r.text
            assert set(r.json()["probabilities"]) == set(LABELS)
        write = container.exec("touch", "/srv/fusion/models/tiny/x")
        assert write.returncode != 0 and "Read-only file system" in write.stderr
    assert not (models / "tiny" / "x").exists()


def test_podman_stop_under_load_drains_and_loses_no_admitted_request(built: Build) -> None:
    outcomes: list[tuple[str, float, float]] = []  # (outcome, sent, answered), time.time()
    lock = threading.Lock()
    files = readme_files()

    def client_loop(url: str) -> None:
        """A client that honours Retry-After (with jitter, as clients should: eight clients retrying in step would
        all reconnect at the same instant) and stops once connections are refused."""
        with httpx.Client(base_url=url, timeout=60) as c:
            while True:
                sent = time.time()
                try:
                    r = c.post("/v1/predict", files=files)
                    outcome = str(r.status_code)
                    if r.status_code == 503:
                        outcome += ":" + r.json()["error"]["code"]
                except httpx.ConnectError:
                    outcome = "refused"
                except httpx.HTTPError as exc:
                    outcome = f"broken:{type(exc).__name__}"
                with lock:
                    outcomes.append((outcome, sent, time.time()))
                if outcome == "refused" or outcome.startswith("broken"):
                    return
                if outcome.startswith("503"):
                    time.sleep(float(r.headers.get("retry-after", "1")) * random.uniform(0.5, 1.5))

    with running(built.image) as container:
        wait_ready(container)
        workers = [threading.Thread(target=client_loop, args=(container.url,)) for _ in range(8)]
        for w in workers:
            w.start()
        while sum(o == "200" for o, _, _ in outcomes) < 32:
            time.sleep(0.05)
        stop_sent = time.time()
        stop = container.stop(STOP_TIMEOUT_S)
        for w in workers:
            w.join(STOP_TIMEOUT_S + 30)
        assert stop.wait(STOP_TIMEOUT_S + 30) == 0, stop.stderr.read() if stop.stderr else ""
        stop_s = time.time() - stop_sent
        state = container.state()
        log = [json.loads(line) for line in container.logs().splitlines() if line.startswith("{")]

    counts = Counter(o for o, _, _ in outcomes)
    (started,) = [e for e in log if e["message"].startswith("starting") and "workers" in e["message"]]
    n_workers = int(started["message"].split()[1])
    draining = [e for e in log if e["message"].startswith("draining")]
    assert len({e["process"] for e in draining}) == len(draining) == n_workers  # every worker drained, once
    # Sent before the SIGTERM, answered after it: finished, not cut short, while new ones were refused.
    finished_in_drain = [o for o, sent, answered in outcomes if sent < stop_sent < answered and o == "200"]
    report(stop_s=stop_s, sent=len(outcomes), ok=counts["200"], not_ready=counts["503:not_ready"],
           refused=counts["refused"], admitted_then_finished_while_draining=len(finished_in_drain))
    # A connection the kernel completes just as the last listener closes is reset before any worker accepts it, as
    # at any TCP server's close: such a request never reached the service (the access log below counts every one
    # that did). Anything else broken would be a request cut short.
    broken = [(o, sent) for o, sent, _ in outcomes if o.startswith("broken")]
    assert all(sent >= stop_sent + DRAIN_DELAY_S - 0.5 for _, sent in broken), (broken, stop_sent, counts)
    assert set(counts) - {o for o, _ in broken} <= {"200", "503:not_ready", "refused"}, counts
    assert finished_in_drain  # requests admitted before the drain began were finished during it...
    assert counts["503:not_ready"] >= 1  # ...new ones were refused while draining...
    assert counts["refused"] + len(broken) == len(workers)  # ...and once the listener closed, connections were refused
    assert state["ExitCode"] == 0 and stop_s < STOP_TIMEOUT_S, (state, stop_s)  # exited by itself, not killed
    access = [e for e in log if e["logger"] == "app.access" and e["route"] == "/v1/predict"]
    assert len(access) == counts["200"] + counts["503:not_ready"]  # the server answered each request once
