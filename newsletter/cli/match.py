"""``newsletter match``: what a profile would get, and why."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from newsletter import clock
from newsletter.cli.context import AppContext, fail, pass_app
from newsletter.db import session_scope
from newsletter.db.candidates import candidate_windows
from newsletter.db.subscriber_reads import list_subscribers, load_profiles, subscriber_id
from newsletter.domain import Match
from newsletter.matching import Matcher, digest_picks, field_text
from newsletter.periods import periods_spanned


def _parse_moment(value: str, option: str) -> datetime:
    """A date (midnight UTC) or an ISO date-time (UTC unless it says otherwise)."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"expected a date like 2026-01-09 or a time like 2026-01-09T07:00, got {value!r}",
            param_hint=option,
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _match_json(rank: int, m: Match) -> dict[str, Any]:
    a = m.article
    return {
        "rank": rank,
        "id": a.id,
        "title": a.title,
        "link": a.link,
        "score": m.score,
        "components": {
            "keywords": m.keyword_score,
            "popularity": m.popularity,
        },
        "trending": m.trending,
        "upvotes": a.upvotes,
        "published": a.published.isoformat(),
        "first_seen": a.first_seen.isoformat(),
        "feed": a.feed_name,
        "matched": [{"keyword": k, "field": f} for k, f in m.matched],
        "hits": [
            {
                "keyword": h.keyword,
                "field": h.field,
                "weight": h.weight,
                "spans": [list(s) for s in h.spans],
                "text": [field_text(a, h.field)[s:e] for s, e in h.spans],
            }
            for h in m.hits
        ],
    }


def _why(m: Match) -> str:
    """``RLHF (title, abstract), reward model (title) · 57 upvotes``: each keyword once."""
    fields: dict[str, list[str]] = {}
    for keyword, field_name in m.matched:
        fields.setdefault(keyword, []).append(field_name)
    parts = [", ".join(f"{k} ({', '.join(f)})" for k, f in fields.items())]
    if m.trending:
        parts = [f"trending: {m.article.upvotes} upvotes"]
    elif m.popularity:
        parts.append(f"{m.article.upvotes} upvotes (+{m.popularity:.2f})")
    return " · ".join(p for p in parts if p)


@click.command("match")
@click.option("--subscriber", "email", required=True, metavar="EMAIL", help="Whose profile.")
@click.option(
    "--since",
    metavar="DATE",
    default=None,
    help="Also consider entries first fetched since DATE (widens the window).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=None,
    help="Show the top N (default: the digest's max_items; 0: all).",
)
@click.option(
    "--as-of",
    "as_of",
    metavar="DATETIME",
    default=None,
    help="Evaluate the window at this moment instead of now.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list for scripts.")
@pass_app
def match_cmd(
    app: AppContext,
    email: str,
    since: str | None,
    limit: int | None,
    as_of: str | None,
    as_json: bool,
) -> None:
    """Show the entries a subscriber's next digest would hold, ranked and explained."""
    now = _parse_moment(as_of, "--as-of") if as_of else clock.now()
    since_at = _parse_moment(since, "--since") if since else None
    with session_scope(app.reader) as session:
        sid = subscriber_id(session, email)
        if sid is None:
            fail(f"no subscriber with address {email.strip()} (is the profile synced?)")
        profile = load_profiles(session, [sid], include_suppressed=True)[sid]
        articles, windows = candidate_windows(
            session,
            [sid],
            now=now,
            since=since_at,
            frequency_of={sid: profile.frequency},
            trending_days=app.settings.newsletter.trending_days if profile.trending else None,
        )
        status = list_subscribers(session, include_deleted=True, ids=[sid])[0].status
    window = windows[sid]
    cap = profile.max_items or app.settings.newsletter.max_items
    # max_items is per period: a window catching up on a failed digest spans two.
    spanned = periods_spanned(profile.frequency, window.start, window.end)
    top = cap * spanned if limit is None else limit
    # Exactly what the digest would carry: the keyword picks, then the trending picks.
    matcher = Matcher(articles)
    shown = list(
        digest_picks(
            matcher,
            profile,
            candidates=window.article_ids,
            limit=None if top == 0 else top,
            popularity_weight=app.settings.newsletter.popularity_weight,
            trending_candidates=window.trending_ids,
        )
    )
    trending = sum(m.trending for m in shown)
    listed = bool(window.listed_ids - window.article_ids)  # older, still trending candidates
    matched = len(matcher.match(profile, candidates=window.article_ids))
    if as_json:
        click.echo(json.dumps([_match_json(i, m) for i, m in enumerate(shown, 1)], indent=2))
        return
    if status != "active":
        click.echo(f"note: {profile.email} is {status}: no digest goes out", err=True)
    span = f"{window.opens_at:%Y-%m-%d %H:%M} .. {window.end:%Y-%m-%d %H:%M} UTC"
    click.echo(
        f"{profile.email}: {len(window.article_ids)} new entries ({span}), "
        + (
            f"{len(window.listed_ids - window.article_ids)} earlier ones listed in the last "
            f"{app.settings.newsletter.trending_days} days (trending candidates), "
            if listed
            else ""
        )
        + f"{matched} matched, "
        + (f"{trending} trending, " if profile.trending else "")
        + f"showing {len(shown)}",
        err=not app.interactive,
    )
    if not app.interactive:
        for i, m in enumerate(shown, 1):
            click.echo(f"{i}\t{m.score:g}\t{m.article.title}\t{_why(m)}")
        return
    table = Table(show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("title", ratio=3)
    table.add_column("matched (field)", ratio=2)
    for i, m in enumerate(shown, 1):
        table.add_row(str(i), f"{m.score:g}", m.article.title, _why(m))
    Console().print(table)
