import subprocess
import sys

from edgestack.cli import main


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "edgestack.cli", "--help"], capture_output=True, text=True).stdout
    for command in ("build", "train", "export", "serve", "predict", "bench", "models"):
        assert command in out


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["build", "no-such-model"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
