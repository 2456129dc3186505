"""README's two commands are the contract: CI runs the test one verbatim, and both are shown first."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_readme_has_serve_then_test_command() -> None:
    serve, test = readme_commands()[:2]
    assert serve.strip().endswith("fusion-serve serve")
    assert "pytest" in test


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == readme_commands()[1].strip()


def test_ci_runs_the_readme_serve_command_before_the_tests() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.index("python3 .ci/readme_serve.py") < ci.index(readme_commands()[1].strip())


def test_ci_reads_the_serve_command_and_example_from_the_readme() -> None:
    spec = importlib.util.spec_from_file_location("readme_serve", ROOT / ".ci" / "readme_serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (ROOT / "README.md").read_text()
    calling = module.section(readme, "## Calling the API")
    assert module.blocks(module.section(readme, "## The two commands"), "bash")[0] == readme_commands()[0].strip()
    assert module.blocks(calling, "bash")[0].startswith("curl ")
    assert module.blocks(calling, "json")[0].startswith("{")
