"""Queued workers (Celery): a face like ``cli`` and ``web``; it may import ``pipeline``,
and no stage imports it. ``app`` builds the Celery app from the settings; ``tasks``
holds the batch task, which runs :func:`newsletter.pipeline.batch.run_batch`."""
