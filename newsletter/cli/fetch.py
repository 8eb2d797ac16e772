"""``newsletter fetch``: pull every feed (or the named ones) and store new entries."""

from __future__ import annotations

import json

import click

from newsletter.cli.context import AppContext, pass_app, plural, reported_elsewhere
from newsletter.cli.progress import ProgressBar
from newsletter.pipeline.fetch import FeedReport, FetchReport, fetch_feeds


class _Bar(ProgressBar):
    """The bar of ``fetch``: one step per feed, named."""

    def __init__(self) -> None:
        super().__init__("fetching")

    def advance(self, report: FeedReport) -> None:
        self.step(report.name)


def _counts(r: FeedReport) -> str:
    return f"{r.new} new, {r.updated} updated, {r.unchanged} unchanged"


def _feed_line(r: FeedReport, width: int) -> str:
    label = r.status.replace("-", " ")
    if r.status in ("ok", "warning"):
        detail = _counts(r) + (f"  ({r.message})" if r.message else "")
    elif r.status == "not-modified":
        detail = "not modified since the last fetch"
    else:
        detail = r.message or ""
    line = f"{r.name:<{width}}  {label:<12}  {detail}"
    if r.moved_to:
        line += f"\n{'':<{width}}  moved permanently to {r.moved_to}"
    return line


def _total_line(report: FetchReport) -> str:
    seconds = (report.finished_at - report.started_at).total_seconds()
    failed = f", {report.failed} failed" if report.failed else ""
    return (
        f"total: {plural(len(report.feeds), 'feed')}, {report.new} new, {report.updated} updated, "
        f"{report.unchanged} unchanged{failed} ({seconds:.1f} s)"
    )


@click.command("fetch")
@click.option(
    "--feed",
    "names",
    multiple=True,
    metavar="NAME",
    help="Fetch only this feed, even if disabled (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_app
def fetch_command(app: AppContext, names: tuple[str, ...], as_json: bool) -> None:
    """Fetch the feeds and store new entries; exit 1 if any feed failed."""
    settings = app.settings
    if not settings.feeds:
        where = settings.config_path or "the config"
        click.echo(f"no feeds configured: add [[feeds]] to {where}", err=True)
        return
    bar = _Bar() if app.interactive and not as_json else None
    try:
        with reported_elsewhere():
            report = fetch_feeds(app.engine, settings, names=names, progress=bar)
    finally:
        if bar:
            bar.stop()
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        width = max((len(r.name) for r in report.feeds), default=0)
        for r in report.feeds:
            click.echo(_feed_line(r, width))
        click.echo(_total_line(report))
    if not report.ok:
        click.get_current_context().exit(1)
