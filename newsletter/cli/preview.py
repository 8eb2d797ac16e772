"""``newsletter preview``: write the digests that would go out to the outbox."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import click

from newsletter import clock
from newsletter.cli.context import AppContext, only_subscribers, pass_app, plural
from newsletter.pipeline.preview import run_preview


@click.command("preview")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write to (default: [newsletter] outbox_dir).",
)
@only_subscribers
@click.option(
    "--date",
    "day",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="The day to preview, YYYY-MM-DD (default: today in each subscriber's timezone).",
)
@pass_app
def preview(
    app: AppContext, out_dir: Path | None, emails: tuple[str, ...], day: datetime | None
) -> None:
    """Write the digests that would go out (HTML, text, .eml) and an index; send nothing."""
    when: date | None = day.date() if day else None
    result = run_preview(
        app.engine,
        app.settings,
        now=clock.now(),
        out_dir=out_dir,
        emails=list(emails) or None,
        day=when,
    )
    for row in result.rows:
        if row.html_href:
            more = f", {row.n_more} as links" if row.n_more else ""
            size = f"{row.size / 1024:.1f} KB"
            entries = plural(row.n_entries, "entry", "entries")
            app.say(f"  {row.email}: {entries}{more}, {size}  {row.subject}")
        else:
            app.say(f"  {row.email}: {row.note}")
    nothing = len(result.rows) - result.written
    app.say(
        f"{plural(result.written, 'digest')} written to {result.out_dir}"
        + (f" ({plural(nothing, 'subscriber')} had nothing new)" if nothing else "")
        + "; nothing was sent"
    )
    app.say(f"open {result.index.as_uri()}")
