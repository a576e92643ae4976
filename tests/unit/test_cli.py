import subprocess
import sys

from cli import main


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "cli", "--help"], capture_output=True, text=True).stdout
    for command in ("build", "train", "export", "serve", "predict", "bench", "models"):
        assert command in out


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["build", "no-such-model"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err


def test_serve_flags_become_the_settings_the_service_reads(monkeypatch):
    from cli import parser
    from cli.serve import server_env
    from serving.runner import RunnerOptions

    args = parser().parse_args(["serve", "digits-cnn", "--max-wait-ms", "2.5", "--max-batch", "8", "--threads", "1",
                                "--grpc-port", "8001"])
    env = server_env(args, {"EDGESTACK_MAX_WAIT_MS": "9", "EDGESTACK_MAX_ITEMS": "7"})
    for key in list(env):
        monkeypatch.setenv(key, env[key])
    options = RunnerOptions.from_env()
    assert (options.max_wait_ms, options.max_batch, options.threads) == (2.5, 8, 1)  # flags win
    assert options.max_items == 7  # a variable without a flag is kept
    assert env["EDGESTACK_MODELS"] == "digits-cnn"
    from edgestack.settings import get_settings

    assert get_settings().grpc_port == 8001


def test_batching_defaults_to_greedy_with_no_wait(monkeypatch):
    from serving.runner import RunnerOptions

    monkeypatch.delenv("EDGESTACK_MAX_WAIT_MS", raising=False)
    assert RunnerOptions.from_env().max_wait_ms == 0.0
