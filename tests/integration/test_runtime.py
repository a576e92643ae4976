
from edgestack.runtime import open_session

ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]








def test_intra_op_spinning_is_on_in_process_and_off_in_the_server(digits_artifact, monkeypatch):
    from serving.image import ImageClassifier
    from serving.runner import RunnerOptions

    def spinning(session) -> str:
        return session.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")

    path = digits_artifact.variant_path("int8")
    assert spinning(open_session(path, device="cpu", threads=2)) == "1"  # ORT's default
    assert spinning(open_session(path, device="cpu", threads=2, spinning=False)) == "0"
    monkeypatch.delenv("EDGESTACK_ORT_SPIN", raising=False)
    assert spinning(ImageClassifier(digits_artifact, RunnerOptions.from_env()).session) == "0"
    monkeypatch.setenv("EDGESTACK_ORT_SPIN", "1")
    assert spinning(ImageClassifier(digits_artifact, RunnerOptions.from_env()).session) == "1"
