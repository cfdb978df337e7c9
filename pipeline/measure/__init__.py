"""The measurement layer: typed jobs and one batch runner for every caller.

A `MeasureJob` names a library, its inputs, the policy to time it with and the store key
(whose first field is the device). `measure_batch(profile, jobs, store, reference)`
runs a batch on the profile's device: one after another in one session, or spread over
every server behind a tracker key; each result is stored as it finishes, beside the
contention `Reference` timed on the same server just before it. Profiling, the build
loop and the kernel tuner's seeding all measure through it.
"""
from pipeline.measure.batch import measure_batch
from pipeline.measure.farm import tracker_servers
from pipeline.measure.jobs import JobResult, MeasureJob, Reference
from pipeline.measure.stores import block_store_path

__all__ = ["JobResult", "MeasureJob", "Reference", "block_store_path", "measure_batch", "tracker_servers"]
