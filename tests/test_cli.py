"""The `fusion-serve` command as a user meets it: fast help, one-line errors, flags over settings."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main
from app.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """`fusion-serve ARGS` in a fresh interpreter; `prelude` runs first (e.g. to hide a module)."""
    code = f"import sys\n{prelude}\nfrom app.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"]])
def test_help_imports_neither_torch_nor_training(args: list[str]) -> None:
    prelude = "import atexit\natexit.register(lambda: print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'sklearn', 'matplotlib') or m.startswith('app.training'))))"
    r = run_cli(*args, prelude=prelude)
    assert r.returncode == 0, r.stderr
    assert "LOADED []" in r.stdout


def test_serve_help_lists_every_setting_with_its_default() -> None:
    r = run_cli("serve", "--help")
    for name in Settings.model_fields:
        assert f"FUSION_{name.upper()}=" in r.stdout, name
    assert "FUSION_MAX_BATCH_SIZE=64" in r.stdout
    assert "--models-dir" in r.stdout


NO_TRAIN_EXTRA = "sys.modules['sklearn'] = None\nsys.modules['matplotlib'] = None"


@pytest.mark.parametrize("command", ["train", "compare"])
def test_a_missing_extra_is_one_line(command: str) -> None:
    r = run_cli(command, "--help", prelude=NO_TRAIN_EXTRA)
    assert r.returncode == 2
    assert r.stderr.strip() == f"fusion-serve {command} needs the [train] extra: pip install -e '.[train]'"


def test_make_data_needs_no_extra() -> None:
    r = run_cli("make-data", "--help", prelude=NO_TRAIN_EXTRA)
    assert r.returncode == 0, r.stderr
    assert "--out" in r.stdout


def test_an_invalid_setting_is_one_line_naming_the_variable() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve"],
        capture_output=True, text=True, cwd=ROOT, timeout=60, env={"FUSION_PORT": "eighty", "PATH": ""},
    )
    assert r.returncode == 2
    assert r.stderr.startswith("fusion-serve serve: FUSION_PORT:")
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_models_dir_flag_overrides_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[Settings] = []
    monkeypatch.setenv("FUSION_MODELS_DIR", "/nonexistent")
    monkeypatch.setattr("app.http.server.serve", lambda settings: seen.append(settings) or 0)
    assert main(["serve", "--models-dir", str(tmp_path), "--port", "8123"]) == 0
    assert seen[0].models_dir == tmp_path and seen[0].port == 8123


def test_an_unknown_command_is_refused() -> None:
    r = run_cli("serv")
    assert r.returncode == 2 and "invalid choice" in r.stderr
