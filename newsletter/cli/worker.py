"""``newsletter worker``: a Celery worker that runs queued send batches."""

from __future__ import annotations

import click

from newsletter.cli.context import AppContext, pass_app
from newsletter.config import check_base_url_for_smtp


@click.command("worker")
@click.option("--concurrency", type=int, default=None, help="Worker processes (default: cores).")
@click.option("--queues", default=None, help="Comma-separated queues (default: [queue] queue).")
@click.option("--hostname", default=None, help="Celery node name (default: newsletter@HOST).")
@click.option("--loglevel", default="INFO", show_default=True)
@pass_app
def worker_command(
    app: AppContext,
    concurrency: int | None,
    queues: str | None,
    hostname: str | None,
    loglevel: str,
) -> None:
    """Run queued send batches (needs [queue] broker_url and PostgreSQL).

    Celery's own process model and signals: TERM finishes the running tasks first
    (warm shutdown), a second TERM or QUIT stops at once; a killed batch is retaken by
    another worker once its lease ends, and nothing is sent twice.
    """
    from newsletter.workers.app import make_app  # celery loads only for this command

    check_base_url_for_smtp(app.settings)

    _ = app.engine  # migrate the schema once, here, rather than in every child
    celery = make_app(app.settings)
    argv = ["worker", f"--loglevel={loglevel}", "--without-gossip", "--without-mingle"]
    argv.append(f"--queues={queues or app.settings.queue.queue}")
    argv.append(f"--hostname={hostname or 'newsletter@%h'}")
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    celery.worker_main(argv)
