"""Per-variant ORT thread choice (export/threads.py): the build times every CPU variant of the
real digits model at each candidate thread count, stores the figures and the choice in the
manifest, and the server's runner opens its session with that choice unless EDGESTACK_THREADS
says otherwise."""

from export.threads import WITHIN, candidates
from serving.runner import RunnerOptions


def test_the_build_records_a_measured_thread_choice_per_cpu_variant(digits_artifact):
    variants = digits_artifact.meta.variants
    for name in ("fp32", "int8"):
        variant = variants[name]
        figures = {int(t): ms for t, ms in variant.threads_batch1_ms.items()}
        assert sorted(figures) == candidates() and all(ms > 0 for ms in figures.values())
        assert variant.threads in figures and figures[variant.threads] <= min(figures.values()) * WITHIN
        assert variant.threads == min(t for t, ms in figures.items() if ms <= min(figures.values()) * WITHIN)
        assert variant.threads_isa["cores"] >= 1 and variant.threads_isa["int8_dot_product"] in ("vnni", "avx2", "none")
    assert variants["fp16"].threads is None  # a GPU variant is not timed on the CPU


def test_the_runner_uses_the_choice_unless_threads_are_set(digits_artifact):
    from edgestack import registry

    runner_cls = registry.load_object(registry.get("digits-cnn").stages.runner)
    chosen = runner_cls(digits_artifact, RunnerOptions(device="cpu", threads=None))
    assert chosen.session.session.get_session_options().intra_op_num_threads == \
        digits_artifact.meta.variants[chosen.variant].threads
    forced = runner_cls(digits_artifact, RunnerOptions(device="cpu", threads=3))
    assert forced.session.session.get_session_options().intra_op_num_threads == 3
