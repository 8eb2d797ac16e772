"""The renderer: matches and a subscriber in; subject, HTML, plain text and MIME bytes out.

The templates see only the plain views of :mod:`.views`. Two paths produce the same
email: :meth:`Renderer.reference_render` renders the whole document and runs premailer
on it; :meth:`Renderer.render` (the fast path) inlines CSS once per template shape
(:mod:`.shapes.compile`) and fills in each subscriber's words: cards drafted cheaply
(:mod:`.cards`), the documents made as UTF-8 together with their quoted-printable
encoding (:mod:`.shapes.fill`, :mod:`.qp`) and handed to the MIME builder as they are.
Every newly compiled shape is checked against the reference render of the email that
needed it, and a template that defeats the scheme makes the renderer fall back to the
reference path (logged once), so a custom template can be slower but never wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from time import process_time
from typing import Any, Literal, cast

from jinja2 import (
    TemplateError,
)

from newsletter.config import NewsletterSettings
from newsletter.domain import Match
from newsletter.errors import RenderError
from newsletter.periods import send_moment
from newsletter.render.cards import card_draft
from newsletter.render.email import DigestRequest, RenderedEmail
from newsletter.render.headers import Headers, Mailbox, mailbox, mailto_url, message_id_for
from newsletter.render.headers import parse_mailbox as _parse_mailbox
from newsletter.render.labels import counted, lead_reason, period_labels, plural, shorten
from newsletter.render.mime import (
    Bodies,
    build_message,
    build_message_from,
    cut_lines,
    reference_build_message,
)
from newsletter.render.parts import (
    SURROGATE,
    Card,
    as_str,
    materialized,
    materialized_cards,
    short_str,
    view_context,
)
from newsletter.render.plain import reflow, reflow_body
from newsletter.render.qp import BAD_LINE
from newsletter.render.shapes.compile import (
    MissingShape,
    ShapeCompiler,
    ShapeError,
    same_html,
)
from newsletter.render.templates import SubjectLine, inline_css, make_environment
from newsletter.render.views import (
    CardView,
    EmailView,
    MoreView,
    card_view,
    clean,
    clean_keyword,
    more_view,
    rank_keywords,
    safe_url,
    top_keywords,
)

log = logging.getLogger(__name__)
# -- the views ---------------------------------------------------------------------------


TemplateName = Literal["digest", "empty"]


class Renderer:
    """Renders digests for one configuration; build once per run and reuse.

    Caches compiled template shapes, so it is cheap per email after the first few.
    Not thread-safe; use one per process (fork after warming it up to share the work).
    """

    def __init__(
        self,
        settings: NewsletterSettings,
        *,
        fast: bool = True,
        nouns: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        # What the copy calls an entry: per feed name ([[feeds]] noun), else the default.
        self._noun = clean(settings.noun) or "entry"
        self._feed_nouns = {k: clean(v) for k, v in (nouns or {}).items() if clean(v)}
        self.env = make_environment(settings.templates_dir)
        self.fast = fast
        self.sender = _parse_mailbox(settings.from_addr, key="newsletter.from")
        self.reply_to = (
            _parse_mailbox(settings.reply_to, key="newsletter.reply_to")
            if settings.reply_to.strip()
            else None
        )
        self.mailto = mailto_url(settings.unsubscribe_mailto) if settings.unsubscribe_mailto else ""
        self.default_send_time = settings.default_send_time
        self._compilers: dict[str, ShapeCompiler] = {}
        contact_box = self.reply_to or self.sender
        self._contact = (contact_box.addr, mailto_url(contact_box.addr, "newsletter"))
        self._list_name = clean(settings.list_name)
        self._subject_line = SubjectLine(
            self.env, plain=set(EmailView.__dataclass_fields__) - {"cards", "more"}
        )
        self.fallback_reason = ""
        # Bodies as 8bit (UTF-8 as it is, lines under 998 bytes) instead of quoted-
        # printable: for SMTP, whose sender re-encodes for a server without 8BITMIME.
        self.body_8bit = False
        # CPU seconds of this process, when a caller (the benchmark) wants them:
        # "render" (the whole email) and its parts "cards" (card drafts and the top
        # keywords), "view" (the view and subject), "html" and "text" (filling, with
        # their quoted-printable lines) and "mime" (building the bytes). None: not
        # measured (no clock read at all).
        self.timings: dict[str, float] | None = None

    # -- public --------------------------------------------------------------------

    def render(self, req: DigestRequest) -> RenderedEmail | None:
        """The email for ``req`` (fast path); ``None`` when there is nothing to send."""
        if self.timings is None:
            return self._render(req, reference=not self.fast)
        started = process_time()
        try:
            return self._render(req, reference=not self.fast)
        finally:
            self._spent("render", started)

    def _clock(self) -> float:
        return process_time() if self.timings is not None else 0.0

    def _spent(self, stage: str, started: float) -> float:
        """Add the CPU time since ``started`` to ``stage``; the time now (for the next)."""
        if self.timings is None:
            return 0.0
        now = process_time()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - started
        return now

    def reference_render(self, req: DigestRequest) -> RenderedEmail | None:
        """The same email the slow, obvious way: render everything, inline once, and
        build the message with the ``email`` package."""
        return self._render(req, reference=True, stdlib_mime=True)

    def _subject(self, ctx: dict[str, Any], top: Sequence[str], n_total: int) -> str:
        if self._subject_line.reads_cards:
            ctx["cards"] = materialized_cards(ctx["cards"])
        try:
            return self._subject_line.render(ctx, top, n_total)
        except TemplateError as e:
            raise RenderError(f"template subject.txt: {e}") from e

    def preview_index(self, rows: Sequence[Any], *, day: str) -> str:
        """The outbox's ``index.html`` from ``preview_index.html`` (a page, not an email)."""
        ctx = {"rows": rows, "day": day, "list_name": self.settings.list_name}
        try:
            return str(self._template("preview_index.html").render(ctx))
        except TemplateError as e:
            raise RenderError(f"template preview_index.html: {e}") from e

    # -- building ------------------------------------------------------------------

    def _template(self, name: str) -> Any:
        try:
            return self.env.get_template(name)
        except TemplateError as e:
            raise RenderError(f"template {name}: {e}") from e

    def _noun_for(self, matches: Sequence[Match]) -> str:
        """The feeds' noun when every match's feed has the same one, else the default."""
        if not self._feed_nouns:
            return self._noun
        found = {self._feed_nouns.get(m.article.feed_name, self._noun) for m in matches}
        return found.pop() if len(found) == 1 else self._noun

    def _view(
        self,
        req: DigestRequest,
        cards: Sequence[Card],
        more: Sequence[MoreView],
        n_hidden: int,
        top: Sequence[str],
    ) -> EmailView:
        p = req.profile
        n_total = len(req.matches)
        label, phrase = period_labels(req.day, p.frequency)
        noun = self._noun_for(req.matches)
        n_more = len(more) + n_hidden
        more_label = ""
        if n_more:
            more_label = f"{n_more} more {'match' if n_more == 1 else 'matches'}"
            more_label += (
                f"; the first {len(more)} are listed, to keep this email short"
                if n_hidden
                else " (titles only, to keep this email short)"
            )
        unsubscribe_url = safe_url(req.unsubscribe_url)
        if not unsubscribe_url:
            raise RenderError(
                f"{p.email}: the unsubscribe URL must be http(s), got {req.unsubscribe_url!r}"
            )
        ctx: dict[str, Any] = {
            "subject": "",
            "preheader": shorten(" · ".join(c.title_text for c in cards[:3]), 140),
            "list_name": self._list_name,
            "period_label": label,
            "period_phrase": phrase,
            "name": clean(p.name or ""),
            "email": clean(p.email),
            "keywords": tuple(k for k in (clean_keyword(k.term) for k in p.keywords) if k),
            "count_label": counted(n_total, f"new {noun}"),
            "reason": lead_reason(req.matches),
            "nouns": plural(noun),
            # The fast path's drafts have CardView's attributes; Jinja gets real views.
            "cards": cast("tuple[CardView, ...]", tuple(cards)),
            "more": tuple(more),
            "more_label": more_label,
            "unsubscribe_url": unsubscribe_url,
            "preferences_url": safe_url(req.preferences_url),
            "contact": self._contact[0],
            "contact_url": self._contact[1],
            "profile_file": clean(Path(p.source).name) if p.source else "",
            "browser_url": safe_url(req.browser_url),
        }
        fields = dict(ctx)
        subject = self._subject(ctx, top, n_total)
        fields["subject"] = subject
        fields["preheader"] = fields["preheader"] or subject
        return EmailView(**fields)

    def _render(
        self, req: DigestRequest, *, reference: bool, stdlib_mime: bool = False
    ) -> RenderedEmail | None:
        if not req.matches and not self.settings.send_empty:
            return None
        try:
            recipient = mailbox(req.profile.email, req.profile.name or "")
        except ValueError as e:
            raise RenderError(f"cannot address {req.profile.email!r}: {e}") from e
        template: TemplateName = "digest" if req.matches else "empty"
        cards: list[Card]
        links = self._feedback_links(req)
        if reference or not self.fast:
            cards = [card_view(m, i, *links(m)) for i, m in enumerate(req.matches, start=1)]
            top = top_keywords(req.profile, req.matches)
        else:
            started = self._clock()
            drafts = [card_draft(m, i, *links(m)) for i, m in enumerate(req.matches, start=1)]
            top = rank_keywords(req.profile, [d.keywords for d in drafts])
            cards = list(drafts)
            self._spent("cards", started)

        def build(n_cards: int, n_listed: int) -> RenderedEmail:
            return self._email(
                req, recipient, template, cards, n_cards, n_listed, reference, stdlib_mime, top
            )

        n = len(cards)
        email = build(n, 0)
        budget = self.settings.max_email_bytes
        if email.size <= budget:
            return email
        # Over budget: the most cards that fit, the rest as "N more" title links; if
        # even the links do not fit, the most links that do (the rest only counted).
        k = _largest(lambda k: build(k, n - k).size <= budget, n)
        if k >= 0:
            return build(k, n - k)
        m = _largest(lambda m: build(0, m).size <= budget, n)
        if m < 0:
            raise RenderError(
                f"newsletter.max_email_bytes = {budget} is smaller than an email without "
                f"entries ({build(0, 0).size} bytes)"
            )
        return build(0, m)

    @staticmethod
    def _feedback_links(req: DigestRequest) -> Callable[[Match], tuple[str, str]]:
        """A card's "More/Fewer like this" URLs: both http(s), or neither."""
        urls = req.feedback_urls

        def links(m: Match) -> tuple[str, str]:
            more, fewer = urls.get(m.article.id, ("", ""))
            more, fewer = safe_url(more), safe_url(fewer)
            return (more, fewer) if more and fewer else ("", "")

        return links

    def _email(
        self,
        req: DigestRequest,
        recipient: Mailbox,
        template: TemplateName,
        cards: Sequence[Card],
        n_cards: int,
        n_listed: int,
        reference: bool,
        stdlib_mime: bool = False,
        top: Sequence[str] | None = None,
    ) -> RenderedEmail:
        more = [more_view(m) for m in req.matches[n_cards : n_cards + n_listed]]
        n_hidden = len(req.matches) - n_cards - n_listed
        if top is None:
            top = top_keywords(req.profile, req.matches)
        started = self._clock()
        view = self._view(req, cards[:n_cards], more, n_hidden, top)
        self._spent("view", started)
        html, text, bodies = self._documents(template, view, reference)
        profile = req.profile
        sent_at = req.sent_at or send_moment(
            profile, req.day, self.default_send_time, self.settings.timezone
        )
        message_id = req.message_id or message_id_for(
            list_id=self.settings.list_id,
            recipient=recipient.addr,
            period=req.period,
            domain=self.sender.domain,
        )
        started = self._clock()
        headers = Headers(
            sender=self.sender,
            recipient=recipient,
            subject=view.subject,
            date=sent_at,
            message_id=message_id,
            list_name=self.settings.list_name,
            list_id=self.settings.list_id,
            unsubscribe_url=view.unsubscribe_url,
            unsubscribe_mailto=self.mailto,
            reply_to=self.reply_to,
        )
        if bodies is not None and not stdlib_mime:
            data = build_message_from(headers, bodies, body_8bit=self.body_8bit)
        else:
            build = reference_build_message if stdlib_mime else build_message
            data = build(headers, as_str(text), as_str(html), body_8bit=self.body_8bit)
        self._spent("mime", started)
        shown = req.matches[: n_cards + n_listed]
        return RenderedEmail(
            subject=view.subject,
            html_part=html,
            text_part=text,
            data=data,
            message_id=message_id,
            sender=self.sender.addr,
            recipient=recipient.addr,
            entry_ids=tuple(m.article.id for m in shown),
            n_cards=n_cards,
            n_more=len(req.matches) - n_cards,
        )

    # -- the two paths -------------------------------------------------------------

    def _documents(
        self, template: TemplateName, view: EmailView, reference: bool
    ) -> tuple[str | bytes, str | bytes, Bodies | None]:
        """(HTML, text, the bodies for the MIME builder when they were made on the way)."""
        if reference or not self.fast:
            return self._reference(template, view)
        qp = not self.body_8bit  # 8bit bodies need no quoted-printable lines
        try:
            html_shapes = self._compiler(f"{template}.html")
            text_shapes = self._compiler(f"{template}.txt")
            try:
                # Every shape known (all but the first few emails): fill in the drafts.
                started = self._clock()
                html, html_lines, new_html = html_shapes.fill_parts(view, compile=False, qp=qp)
                started = self._spent("html", started)
                text, text_lines, new_text = text_shapes.fill_parts(view, compile=False, qp=qp)
                self._spent("text", started)
            except MissingShape:
                view = materialized(view)  # probes are made of real views
                html, html_lines, new_html = html_shapes.fill_parts(view, qp=qp)
                text, text_lines, new_text = text_shapes.fill_parts(view, qp=qp)
        except (ShapeError, AttributeError, TypeError, ValueError) as e:
            self._give_up(f"{template}: {e}")
            return self._reference(template, view)
        except TemplateError as e:
            raise RenderError(f"template {template}: {e}") from e
        # As _reference does, on the bytes; an 8bit body's lines are not encoded (the
        # surrogate scan below finds what would have made one unencodable).
        reflowed = reflow_body(text, text_lines, qp=qp)
        if reflowed is None:
            text, text_lines = reflow(as_str(text)).encode("utf-8", "surrogatepass"), [BAD_LINE]
        else:
            text, text_lines = reflowed
        html_qp: list[bytes] | None = html_lines if qp else None
        short, longest = cut_lines(html)
        if short is not html:  # long lines cut: the lines' encodings no longer fit
            html, html_qp = short, None
        if new_html or new_text:
            # A shape was compiled from this email: prove it on this email.
            ref_html, ref_text, _ = self._reference(template, view)
            if not same_html(as_str(html), ref_html) or as_str(text) != ref_text:
                self._give_up(f"{template}: the compiled shape differs from the reference render")
                return ref_html, ref_text, None
        if (
            b"\r" in html
            or b"\r" in text
            or BAD_LINE in html_lines
            or BAD_LINE in text_lines
            or (not qp and (SURROGATE.search(html) or SURROGATE.search(text)))
        ):
            # A CR to normalise or a lone surrogate: the MIME builder's own way.
            return as_str(html), as_str(text), None
        return html, text, Bodies(text, html, text_lines if qp else None, html_qp, longest)

    def _give_up(self, reason: str) -> None:
        log.warning(
            "templates cannot use the fast renderer (%s); inlining CSS for every email", reason
        )
        self.fast = False
        self.fallback_reason = reason

    def _reference(self, template: TemplateName, view: EmailView) -> tuple[str, str, Bodies | None]:
        ctx = view_context(materialized(view))
        try:
            html = short_str(inline_css(self._template(f"{template}.html").render(ctx)))
            text = reflow(self._template(f"{template}.txt").render(ctx))
        except TemplateError as e:
            raise RenderError(f"template {template}: {e}") from e
        return html, text, None  # (the MIME builder encodes the bodies)

    def _compiler(self, name: str) -> ShapeCompiler:
        compiler = self._compilers.get(name)
        if compiler is None:
            tpl = self._template(name)
            html = name.endswith(".html")

            def render(probe: Any, tpl: Any = tpl) -> str:
                return str(
                    tpl.render({n: getattr(probe, n) for n in EmailView.__dataclass_fields__})
                )

            compiler = ShapeCompiler(render, postprocess=inline_css if html else None, html=html)
            self._compilers[name] = compiler
        return compiler


def _largest(fits: Callable[[int], bool], n: int) -> int:
    """The largest ``k`` in ``0..n`` with ``fits(k)`` (monotone), or -1 if none."""
    if not fits(0):
        return -1
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo
