"""The generator's batcher metrics; the batcher itself is services/common/batching.py.

Names are stable: dashboards, alerts and the autoscaler (queue depth) read them.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.common.batching import BatchMetrics

BATCH_SIZE = Histogram("genir_generator_batch_size", "Images computed together in one pipeline call.",
                       buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64))
QUEUE_SECONDS = Histogram("genir_generator_queue_seconds", "Time a request waited before its batch started.",
                          buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
INFERENCE_SECONDS = Histogram("genir_generator_inference_seconds", "Wall time of one pipeline call (a batch).",
                              buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300))
IMAGES = Counter("genir_generator_images_total", "Images computed by the pipeline.")
DROPPED = Counter("genir_generator_dropped_total", "Requests dropped before inference.", ["reason"])
QUEUE_DEPTH = Gauge("genir_generator_queue_depth", "Requests waiting for a batch.")

METRICS = BatchMetrics(batch_size=BATCH_SIZE, queue_seconds=QUEUE_SECONDS, inference_seconds=INFERENCE_SECONDS,
                       items=IMAGES, dropped=DROPPED, queue_depth=QUEUE_DEPTH)
