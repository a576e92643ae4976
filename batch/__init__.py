"""Batch inference jobs: `edgestack batch MODEL INPUT OUTPUT`.

job.py        the plan, atomic shards, resume, merge, the summary (engine-independent)
adapter.py    what a family adapter provides; run_shard, the unit of work of every engine
local.py      engine "local": this process + spawned worker processes, one ORT session each
ray_engine.py engine "ray": Ray Data map_batches with an actor pool of ORT sessions
images.py     the CNN image classifiers' adapter (folders of images, IDX, .npy)
bench.py      `edgestack bench-batch`: items/s per engine on one input, table + JSON

A family gets batch jobs with one adapter module and one entry in
the family's `batch` stage in edgestack/registry.py.
"""
