"""The Ray Serve engine's per-model settings (serving/ray_engine.py) and its remote runners,
without starting Ray: the parsing of [MODEL=]VALUE lists, and that a proxy gets the family
runner's own request checks (the same mixin), so it refuses a request as the runner would.
The engine against a real Ray: tests/integration/test_ray_serve.py."""

from __future__ import annotations

import pytest

from edgestack.errors import UsageError
from serving.image import ImageClassifier, ImageRequests
from serving.ray_engine import (
    RemoteRunner,
    count,
    cpus,
    per_model,
    remote_runner_class,
    span,
)
from serving.text import TextClassifier
from serving.tune import MusicGenerator, TuneRequests


def test_per_model_values_bare_for_all_and_model_for_one():
    entries = ["1", "sentiment-transformer=2", "digits-cnn=3"]
    assert per_model(entries, "sentiment-transformer", count, "x") == 2
    assert per_model(entries, "fashion-cnn", count, "x") == 1
    assert per_model(["1:4", "folk-lstm=0:2"], "folk-lstm", span, "x") == (0, 2)
    assert per_model(["0.5"], "digits-cnn", cpus, "x") == 0.5
    assert per_model([], "digits-cnn", count, "x") is None


@pytest.mark.parametrize("entries, parse, words", [
    (["0"], count, "a whole number >= 1"),
    (["two"], count, "a whole number >= 1"),
    (["4:1"], span, "MIN:MAX"),
    (["3"], span, "MIN:MAX"),
    (["-1"], cpus, "a number > 0"),
    (["no-such-model=2"], count, "names no registered model"),
])
def test_bad_entries_are_one_line_usage_errors(entries, parse, words):
    with pytest.raises(UsageError, match=words):
        per_model(entries, "digits-cnn", parse, "--flag")


def test_remote_runners_are_made_of_the_familys_request_side():
    # what the router does with them (refuses a request as the runner would, never asking the
    # replica): tests/integration/test_ray_serve.py test_the_router_refuses_a_bad_request_...
    image = remote_runner_class(ImageClassifier)
    assert issubclass(image, ImageRequests) and issubclass(image, RemoteRunner)
    assert issubclass(remote_runner_class(MusicGenerator), TuneRequests)
    assert remote_runner_class(TextClassifier).__mro__[1] is RemoteRunner  # nothing to check before the replica



def test_ray_flags_need_the_ray_engine_and_grpc_is_bentomls(capsys):
    from cli import main

    assert main(["serve", "digits-cnn", "--replicas", "2", "--autoscale", "1:3"]) == 2
    assert "--replicas, --autoscale: Ray Serve settings; add --engine ray" in capsys.readouterr().err
    assert main(["serve", "digits-cnn", "--engine", "ray", "--grpc-port", "9001"]) == 2
    assert "not on --engine ray" in capsys.readouterr().err
