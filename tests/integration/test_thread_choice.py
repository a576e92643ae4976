"""Per-variant ORT thread choice (export/threads.py): the build times every CPU variant of the
real digits model at each candidate thread count, stores the figures and the choice in the
manifest, and the server's runner opens its session with that choice unless EDGESTACK_THREADS
says otherwise."""

import json
import shutil

import pytest

from edgestack import artifact
from export.threads import WITHIN, candidates, choose
from serving.runner import RunnerOptions


@pytest.mark.parametrize("figures, chosen", [
    ({1: 1.00, 2: 0.50}, 2),             # twice as fast on 2: take 2
    ({1: 1.00, 2: 0.97}, 1),             # within 5% of the fastest: the fewest threads
    ({1: 1.00, 2: 0.80, 4: 0.78}, 2),    # 4 is fastest, 2 within 5% of it
    ({1: 0.05, 2: 0.09, 4: 0.20}, 1),    # a tiny CNN: extra threads only cost
])
def test_the_choice_is_the_fewest_threads_within_5_percent_of_the_fastest(figures, chosen):
    assert WITHIN == 1.05 and choose(figures) == chosen


def test_the_build_records_a_measured_thread_choice_per_cpu_variant(digits_artifact):
    variants = digits_artifact.meta.variants
    for name in ("fp32", "int8"):
        variant = variants[name]
        figures = {int(t): ms for t, ms in variant.threads_batch1_ms.items()}
        assert sorted(figures) == candidates() and all(ms > 0 for ms in figures.values())
        assert variant.threads == choose(figures)  # the figures it measured, the rule above
        assert variant.threads_isa["cores"] >= 1 and variant.threads_isa["int8_dot_product"] in ("vnni", "avx2", "none")
    assert variants["fp16"].threads is None  # a GPU variant is not timed on the CPU


def test_the_runner_uses_the_choice_unless_threads_are_set(digits_artifact, tmp_path):
    from edgestack import registry

    # a copy whose manifest names a thread count nothing else would pick (not a default, not a candidate)
    copy = tmp_path / "digits-cnn" / digits_artifact.version
    shutil.copytree(digits_artifact.path, copy)
    manifest = json.loads((copy / artifact.MANIFEST).read_text())
    manifest["variants"]["int8"]["threads"] = 3
    (copy / artifact.MANIFEST).write_text(json.dumps(manifest))
    art = artifact.load(copy)

    runner_cls = registry.load_object(registry.get("digits-cnn").stages.runner)

    def threads(options: RunnerOptions) -> int:
        return runner_cls(art, options).session.session.get_session_options().intra_op_num_threads

    assert threads(RunnerOptions(device="cpu", variant="int8", threads=None)) == 3
    assert threads(RunnerOptions(device="cpu", variant="int8", threads=1)) == 1
