"""Compose a batch of digests: candidates -> match -> render. Reads, never writes.

``send`` and ``preview`` both call :meth:`Composer.compose`, so a preview shows exactly
what would be sent. The batch's entries are loaded and indexed once (one
:class:`~newsletter.matching.matcher.Matcher` for the whole batch); each subscriber is then
matched against the entries of their own window that they have not been sent yet.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from time import process_time

from sqlalchemy.orm import Session

from newsletter import tokens
from newsletter.config import Settings
from newsletter.db.candidates import ArticleCache, CandidateWindow, candidate_windows
from newsletter.db.copies import compress_copy
from newsletter.db.subscriber_reads import link_keys, load_profiles
from newsletter.delivery.payload import plain_lines
from newsletter.domain import Article, Match, Profile
from newsletter.errors import RenderError
from newsletter.matching import Matcher, digest_picks
from newsletter.periods import (
    local_now,
    period_day,
    period_of,
    periods_spanned,
    send_day,
    send_moment,
)
from newsletter.pipeline.jobs import DigestJob, Draft
from newsletter.render import DigestRequest, RenderedEmail, Renderer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ComposedDigest:
    """A composed digest; ``email`` is None when nothing matched (and send_empty is off)."""

    subscriber_id: int
    profile: Profile
    period: str
    day: date  # the local day the digest is dated
    window_start: datetime
    window_end: datetime
    matches: tuple[Match, ...]
    email: RenderedEmail | None

    @property
    def entry_ids(self) -> tuple[int, ...]:
        """Entries the email shows (cards and "more" links): what becomes "sent"."""
        return self.email.entry_ids if self.email else ()

    @property
    def entries(self) -> tuple[tuple[int, float], ...]:
        """(entry id, score) of the shown entries, in rank order (for the outbox)."""
        shown = set(self.entry_ids)
        return tuple((m.article.id, m.score) for m in self.matches if m.article.id in shown)


class Composer:
    """Composes digests for one configuration; keep one per process and reuse it.

    The renderer inside caches compiled template shapes, and the token secret is read
    once, so composing many batches costs little more than the matching itself.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        renderer: Renderer | None = None,
        secret: bytes | None = None,
        body_8bit: bool = False,
    ) -> None:
        self.settings = settings
        self.renderer = renderer or Renderer(
            settings.newsletter, nouns={f.name: f.noun for f in settings.feeds if f.noun}
        )
        # 8bit bodies for a send (the SMTP sender re-encodes them as quoted-printable
        # for a server without 8BITMIME, the preview sender always); QP for previews.
        self.renderer.body_8bit = body_8bit
        self.secret = secret if secret is not None else tokens.secret_from_settings(settings)
        # The index of the last batch's articles: a send's batches share one window,
        # so rebuilding it (about a second per thousand articles) would be wasted.
        self._matcher: Matcher | None = None
        # The entries decoded so far: the next batch decodes only new or changed ones.
        self.articles = ArticleCache()

    def _matcher_for(self, articles: Sequence[Article]) -> Matcher:
        """The index of the last batch when it holds every one of ``articles``
        unchanged: matching is always restricted to a window's candidates, so entries
        beyond them change nothing (a send's batches, and the slices of one batch on
        the workers, share one window)."""
        known = self._matcher
        if known is not None:
            have = known.by_id
            if all(have.get(a.id) == a for a in articles):
                return known
        known = self._matcher = Matcher(articles)
        return known

    def warm(self, session: Session, jobs: Sequence[DigestJob]) -> None:
        """Build the index of the entries ``jobs`` are matched against, and compile their
        keywords, now.

        For a process about to fork its composing workers: they inherit it (shared
        copy-on-write pages) instead of each building its own, about a second per
        thousand entries apiece.
        """
        if jobs:
            profiles = load_profiles(session, [j.subscriber_id for j in jobs])
            articles, _ = self._windows(session, jobs, profiles)
            # The batch's keywords too: they are the common ones (the costly ones to
            # compile, hitting the most entries), which every worker would compile again.
            self._matcher_for(list(articles.values())).prepare(profiles.values())

    def links(self, subscriber_id: int, version: int, salt: str) -> tuple[str, str]:
        """(unsubscribe URL, preferences URL) for the footer and ``List-Unsubscribe``."""
        nl = self.settings.newsletter
        token = tokens.make_token(
            self.secret,
            subscriber_id=subscriber_id,
            list_id=nl.list_id,
            version=version,
            salt=salt,
        )
        return tokens.unsubscribe_url(nl.base_url, token), tokens.preferences_url(
            nl.base_url, token
        )

    def browser_link(
        self, subscriber_id: int, version: int, salt: str, digest_id: int | None
    ) -> str:
        """The "View in browser" URL of a digest a send keeps; "" for a preview (no outbox
        row) or when ``[web] keep_digests_days`` is 0."""
        if digest_id is None or self.settings.web.keep_digests_days <= 0:
            return ""
        nl = self.settings.newsletter
        token = tokens.make_digest_token(
            self.secret,
            subscriber_id=subscriber_id,
            list_id=nl.list_id,
            version=version,
            salt=salt,
            digest_id=digest_id,
        )
        return tokens.digest_view_url(nl.base_url, token)

    def feedback_links(
        self, subscriber_id: int, version: int, salt: str, matches: Sequence[Match]
    ) -> dict[int, tuple[str, str]]:
        """Each card's "More/Fewer like this" URLs, signed for this subscriber row."""
        nl = self.settings.newsletter
        ids = [m.article.id for m in matches]
        pairs = tokens.feedback_tokens(
            self.secret,
            subscriber_id=subscriber_id,
            list_id=nl.list_id,
            version=version,
            salt=salt,
            entry_ids=ids,
        )
        base = nl.base_url
        url = tokens.feedback_url
        return {
            i: (url(base, more), url(base, fewer))
            for i, (more, fewer) in zip(ids, pairs, strict=True)
        }

    def _windows(
        self, session: Session, jobs: Sequence[DigestJob], profiles: dict[int, Profile]
    ) -> tuple[dict[int, Article], dict[int, CandidateWindow]]:
        """Every job's candidate entries; one query set per distinct window end.

        A send's jobs share one end (the moment of sending); a preview across
        timezones has a few. Explicit starts load from the earliest of them and are
        then applied per job.
        """
        frequency = {sid: p.frequency for sid, p in profiles.items()}
        groups: dict[tuple[datetime, bool], list[DigestJob]] = {}
        for job in jobs:
            if job.subscriber_id in profiles:
                key = (job.window_end, job.window_start is not None)
                groups.setdefault(key, []).append(job)
        articles: dict[int, Article] = {}
        windows: dict[int, CandidateWindow] = {}
        # Jobs mostly share a start and a candidate set: filter each pair once, and
        # give them the same frozenset (the matcher caches its mask per set).
        narrowed: dict[tuple[frozenset[int], frozenset[int], datetime], CandidateWindow] = {}
        trending_days = self.settings.newsletter.trending_days
        for (end, explicit), group in groups.items():
            since = (
                min(j.window_start for j in group if j.window_start is not None)
                if explicit
                else None
            )
            wants = any(profiles[j.subscriber_id].trending for j in group)
            found, got = candidate_windows(
                session,
                [j.subscriber_id for j in group],
                now=end,
                frequency_of=frequency,
                since=since,
                trending_days=trending_days if wants else None,
                cache=self.articles,
            )
            articles.update((a.id, a) for a in found)
            for job in group:
                window = got[job.subscriber_id]
                if job.window_start is not None:
                    start = job.window_start
                    sets = (window.article_ids, window.listed_ids, start)
                    shared = narrowed.get(sets)
                    if shared is None:
                        ids = frozenset(
                            i for i in window.article_ids if articles[i].first_seen > start
                        )
                        # Recently listed papers stay trending candidates whatever the start.
                        shared = narrowed[sets] = CandidateWindow.of(
                            job.subscriber_id, start, end, ids, window.listed_ids
                        )
                    window = dataclasses.replace(shared, subscriber_id=job.subscriber_id)
                windows[job.subscriber_id] = window
        return articles, windows

    def __call__(self, session: Session, jobs: Sequence[DigestJob]) -> dict[int, Draft | None]:
        """The composer as the send pipeline's :data:`~newsletter.pipeline.jobs.ComposeFn`.

        The Date header is the moment of composing: the latest window end of the batch
        (every job of a send shares it).
        """
        out: dict[int, Draft | None] = dict.fromkeys((j.subscriber_id for j in jobs), None)
        if not jobs:
            return out
        sent_at = max(j.window_end for j in jobs)
        # View in browser's copy is compressed here, on the composing cores, not by the
        # one process that talks SMTP; so are its line ends and dots checked.
        keep = self.settings.web.keep_digests_days > 0
        # One digest at a time: each rendering's HTML and text parts go as soon as its
        # draft is made, instead of the whole batch's waiting in a list.
        for c in self.iter_compose(session, jobs, sent_at=sent_at):
            if c.email is not None:
                out[c.subscriber_id] = Draft(
                    subscriber_id=c.subscriber_id,
                    recipient=c.email.recipient,
                    subject=c.email.subject,
                    message_id=c.email.message_id,
                    data=c.email.data,
                    entries=c.entries,
                    kept=compress_copy(c.email.data) if keep else None,
                    plain_lines=plain_lines(c.email.data),
                )
        return out

    def compose(
        self,
        session: Session,
        jobs: Sequence[DigestJob],
        *,
        sent_at: datetime | None = None,
    ) -> list[ComposedDigest]:
        """Match and render each job; a few queries for the whole batch.

        ``sent_at`` is the Date header (None: each digest's scheduled send moment,
        which keeps previews reproducible). A subscriber who vanished or unsubscribed
        since the job was made is left out of the result.
        """
        return list(self.iter_compose(session, jobs, sent_at=sent_at))

    def iter_compose(
        self,
        session: Session,
        jobs: Sequence[DigestJob],
        *,
        sent_at: datetime | None = None,
    ) -> Iterator[ComposedDigest]:
        """:meth:`compose`, one digest at a time (the batch's queries and matcher come
        first), so that a caller keeping less than the whole rendering holds one."""
        if not jobs:
            return
        # CPU seconds per stage, when the renderer's timings are on (the benchmark):
        # "db" (queries), "match" (matching and picking), "tokens" (links).
        timings = self.renderer.timings
        clock = process_time if timings is not None else _no_clock
        spent = dict.fromkeys(("db", "match", "tokens"), 0.0)
        started = clock()
        ids = [j.subscriber_id for j in jobs]
        profiles = load_profiles(session, ids)
        keys = link_keys(session, ids)
        articles, windows = self._windows(session, jobs, profiles)
        t1 = clock()
        spent["db"] += t1 - started
        matcher = self._matcher_for(list(articles.values()))
        matcher.prepare(profiles.values())
        spent["match"] += clock() - t1
        nl = self.settings.newsletter
        for job in jobs:
            profile = profiles.get(job.subscriber_id)
            window = windows.get(job.subscriber_id)
            key = keys.get(job.subscriber_id)
            if profile is None or window is None or key is None:
                log.info("subscriber %d is gone or unsubscribed; no digest", job.subscriber_id)
                continue
            t0 = clock()
            matches = digest_picks(
                matcher,
                profile,
                candidates=window.article_ids,
                limit=(profile.max_items or nl.max_items)
                * periods_spanned(profile.frequency, window.start, window.end),
                popularity_weight=nl.popularity_weight,
                trending_candidates=window.trending_ids,
            )
            t1 = clock()
            unsubscribe, preferences = self.links(job.subscriber_id, *key)
            spent["match"] += t1 - t0
            spent["tokens"] += clock() - t1
            day = period_day(job.period, profile)
            try:
                email = self.renderer.render(
                    DigestRequest(
                        profile=profile,
                        matches=matches,
                        day=day,
                        period=job.period,
                        unsubscribe_url=unsubscribe,
                        preferences_url=preferences,
                        feedback_urls=self.feedback_links(job.subscriber_id, *key, matches),
                        browser_url=self.browser_link(job.subscriber_id, *key, job.digest_id),
                        sent_at=sent_at,
                    )
                )
            except RenderError as e:
                raise RenderError(f"{profile.email}: {e}") from e
            yield ComposedDigest(
                subscriber_id=job.subscriber_id,
                profile=profile,
                period=job.period,
                day=day,
                window_start=window.start,
                window_end=window.end,
                matches=matches,
                email=email,
            )
        if timings is not None:
            for stage, seconds in spent.items():
                timings[stage] = timings.get(stage, 0.0) + seconds


def _no_clock() -> float:
    return 0.0


def day_jobs(
    settings: Settings,
    profiles: dict[int, Profile],
    *,
    now: datetime,
    day: date | None = None,
) -> list[DigestJob]:
    """The digest each subscriber gets for ``day`` (default: today in their timezone).

    Its window ends when that digest is due — or now, if that is later and the day is
    not over yet, which is what ``send --now`` would send.
    """
    nl = settings.newsletter
    jobs: list[DigestJob] = []
    for sid, p in profiles.items():
        today = local_now(p, now, nl.timezone).date()
        local_day = day or today
        due = send_moment(p, send_day(p, local_day), nl.default_send_time, nl.timezone)
        end = max(due, now) if local_day >= today else due
        jobs.append(DigestJob(sid, period_of(p.frequency, local_day), None, end))
    return jobs
