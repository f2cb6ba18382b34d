import subprocess
import sys

from genir.cli import COMMANDS


def genir(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "genir.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_help_lists_every_subcommand():
    out = genir("--help")
    assert out.returncode == 0
    for group in {path[0] for path in COMMANDS}:
        assert group in out.stdout
    serve = genir("serve", "--help")
    for svc in ("generator", "refiner", "retriever", "orchestrator", "triton"):
        assert svc in serve.stdout


def test_tiny_models_build_command(tmp_path):
    out = genir("tiny-models", "build", str(tmp_path), "--only", "clip")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "clip" / "config.json").exists() and "clip" in out.stdout


def test_unknown_command_fails():
    assert genir("no-such-command").returncode == 2
