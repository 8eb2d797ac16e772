"""Trending picks and the popularity blend, end to end through the CLI.

The Daily Papers pages of ``../shared/fixtures/hf-api/`` are served on 127.0.0.1,
fetched, and a keyword-less ``trending: 5`` profile asks ``match`` what its digest
would carry. The clock is the documented simulated one (``NEWSLETTER_NOW``), so the
listing days and every window are the same on every run.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, select

from newsletter import clock
from newsletter.cli import cli
from newsletter.models import Digest, DigestEntry, Subscriber
from tests.conftest import SHARED
from tests.support.http import FeedServer, Route
from tests.support.subscribers import write_profile

HF = SHARED / "fixtures" / "hf-api"
NOW = datetime(2026, 1, 10, 6, 0, tzinfo=UTC)  # the fetch: page 001 yesterday, 002 today
YESTERDAY, TODAY = "2026-01-09", "2026-01-10"
TOP5 = "email: top@example.org\ntrending: 5\n"
RL = "email: rl@example.org\nkeywords: [reinforcement learning]\nmax_items: 3\n"
BOTH = "email: both@example.org\nkeywords: [reinforcement learning]\nmax_items: 3\ntrending: 2\n"


def _serve(server: FeedServer, day_pages: dict[str, str]) -> str:
    for day, page in day_pages.items():
        server.route(
            f"/api/daily_papers?date={day}",
            Route(body=(HF / page).read_bytes(), content_type="application/json"),
        )
    return server.url("/api/daily_papers")


def _at(monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    """Move the simulated clock (it then runs at its normal pace from ``moment``)."""
    monkeypatch.setenv(clock.ENV, moment.isoformat())


@pytest.fixture
def project(
    tmp_path: Path, db_url: str, feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> Path:
    _at(monkeypatch, NOW)
    url = _serve(feed_server, {YESTERDAY: "daily_papers-001.json", TODAY: "daily_papers-002.json"})
    (tmp_path / "newsletter.toml").write_text(
        f'[database]\nurl = "{db_url}"\n\n[newsletter]\nsubscribers_dir = "subscribers"\n'
        f'outbox_dir = "{tmp_path / "outbox"}"\npopularity_weight = 1.5\n\n'
        f'[[feeds]]\nname = "hf"\ntype = "hf-daily-papers"\nurl = "{url}"\ndays = 1\n',
        encoding="utf-8",
    )
    write_profile(tmp_path / "subscribers", "top.yaml", TOP5)
    write_profile(tmp_path / "subscribers", "rl.yaml", RL)
    return tmp_path


def invoke(project: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(project / "newsletter.toml"), *args])


def _match(
    project: Path, email: str, as_of: datetime = NOW + timedelta(hours=1)
) -> list[dict[str, Any]]:
    result = invoke(project, "match", "--subscriber", email, "--as-of", as_of.isoformat(), "--json")
    assert result.exit_code == 0, result.output
    out: list[dict[str, Any]] = json.loads(result.stdout)
    return out


def _upvotes(*pages: str) -> dict[str, int]:
    """Each paper's count as the fetch keeps it: the highest read in one fetch."""
    votes: dict[str, int] = {}
    for page in pages:
        for it in json.loads((HF / page).read_bytes()):
            pid, n = it["paper"]["id"], it["paper"]["upvotes"]
            votes[pid] = max(n, votes.get(pid, n))
    return votes


def _check_trending(picks: list[dict[str, Any]], votes: dict[str, int]) -> None:
    assert len(picks) == 5 and all(p["trending"] for p in picks)
    expected = sorted((v for v in votes.values() if v > 0), reverse=True)[:5]
    assert [p["upvotes"] for p in picks] == expected
    # Ties: newer publication first, then the smaller id.
    keys = [(-p["upvotes"], -datetime.fromisoformat(p["published"]).timestamp()) for p in picks]
    assert keys == sorted(keys)
    by_link = {_paper(p): p["upvotes"] for p in picks}
    assert all(votes[pid] == n for pid, n in by_link.items())


def _ids(*pages: str) -> set[str]:
    return {it["paper"]["id"] for p in pages for it in json.loads((HF / p).read_bytes())}


def _paper(pick: dict[str, Any]) -> str:
    link: str = pick["link"]
    return link.rsplit("/", 1)[1]


def test_keyword_less_trending_profile_gets_the_most_upvoted_papers(project: Path) -> None:
    check = invoke(project, "subscribers", "check")
    assert check.exit_code == 0, check.output
    assert invoke(project, "subscribers", "sync").exit_code == 0
    assert invoke(project, "fetch").exit_code == 0

    _check_trending(
        _match(project, "top@example.org"),
        _upvotes("daily_papers-001.json", "daily_papers-002.json"),
    )


def test_after_the_later_fetch_the_order_follows_the_new_counts(
    project: Path, feed_server: FeedServer
) -> None:
    assert invoke(project, "subscribers", "sync").exit_code == 0
    assert invoke(project, "fetch").exit_code == 0
    before = _match(project, "top@example.org")

    _serve(feed_server, {YESTERDAY: "daily_papers-001-later.json"})
    assert invoke(project, "fetch").exit_code == 0
    after = _match(project, "top@example.org")
    votes = _upvotes("daily_papers-001-later.json", "daily_papers-002.json")
    _check_trending(after, votes)
    assert [p["id"] for p in after] != [p["id"] for p in before]


def test_keyword_results_blend_upvotes_and_show_their_components(project: Path) -> None:
    assert invoke(project, "subscribers", "sync").exit_code == 0
    assert invoke(project, "fetch").exit_code == 0
    picks = _match(project, "rl@example.org")
    assert picks and not any(p["trending"] for p in picks)
    for p in picks:
        c = p["components"]
        pop = 1.5 * math.log1p(p["upvotes"]) if p["upvotes"] else 0.0
        assert c["popularity"] == pytest.approx(pop)
        assert p["score"] == pytest.approx(c["keywords"] + c["popularity"])
    scores = [p["score"] for p in picks]
    assert scores == sorted(scores, reverse=True)


def test_check_explains_the_keyword_rule(tmp_path: Path) -> None:
    (tmp_path / "newsletter.toml").write_text(
        '[newsletter]\nsubscribers_dir = "subscribers"\n', encoding="utf-8"
    )
    write_profile(tmp_path / "subscribers", "none.yaml", "email: a@example.org\n")
    write_profile(tmp_path / "subscribers", "big.yaml", "email: b@example.org\ntrending: 500\n")
    result = CliRunner().invoke(
        cli, ["--config", str(tmp_path / "newsletter.toml"), "subscribers", "check"]
    )
    assert result.exit_code != 0
    assert "or trending: N for the N most upvoted papers alone" in result.output
    assert "trending: expected 1 to 50, got 500" in result.output


def _sent(db_url: str, email: str) -> list[list[int]]:
    """The entry ids of each digest sent to ``email``, oldest digest first, in rank order."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(DigestEntry.digest_id, DigestEntry.entry_id)
                .join(Digest, Digest.id == DigestEntry.digest_id)
                .join(Subscriber, Subscriber.id == Digest.subscriber_id)
                .where(Subscriber.email == email, Digest.status == "sent")
                .order_by(Digest.id, DigestEntry.rank)
            ).all()
    finally:
        engine.dispose()
    out: dict[int, list[int]] = {}
    for digest_id, entry_id in rows:
        out.setdefault(digest_id, []).append(entry_id)
    return list(out.values())


def _send(project: Path, monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    _at(monkeypatch, moment)
    result = invoke(project, "send", "--now")
    assert result.exit_code == 0, result.output


def test_a_listed_paper_stays_a_trending_candidate_until_sent(
    project: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upvotes arrive over days: yesterday's and today's papers that were not sent stay
    trending candidates tomorrow, though nothing new was fetched since the last digest;
    keyword picks keep the "new since the last digest" window."""
    write_profile(project / "subscribers", "both.yaml", BOTH)
    assert invoke(project, "subscribers", "sync").exit_code == 0
    assert invoke(project, "fetch").exit_code == 0
    votes = _upvotes("daily_papers-001.json", "daily_papers-002.json")

    day1 = _match(project, "top@example.org")
    both1 = _match(project, "both@example.org")
    assert [p["trending"] for p in both1] == [False] * 3 + [True] * 2
    _send(project, monkeypatch, NOW + timedelta(hours=1))
    # match --subscriber showed exactly what went out.
    assert _sent(db_url, "top@example.org") == [[p["id"] for p in day1]]
    assert _sent(db_url, "both@example.org") == [[p["id"] for p in both1]]

    # The next morning: no fetch in between, so the keyword window is empty.
    tomorrow = NOW + timedelta(days=1, hours=1)
    assert _match(project, "rl@example.org", tomorrow) == []
    day2 = _match(project, "top@example.org", tomorrow)
    sent = {_paper(p) for p in day1}
    _check_trending(day2, {pid: n for pid, n in votes.items() if pid not in sent})
    said = invoke(
        project, "match", "--subscriber", "top@example.org", "--as-of", tomorrow.isoformat()
    )
    assert said.exit_code == 0, said.output
    unsent = len(_ids("daily_papers-001.json", "daily_papers-002.json")) - len(day1)
    assert "0 new entries" in said.stderr
    assert f"{unsent} earlier ones listed in the last 3 days (trending candidates)" in said.stderr
    both2 = _match(project, "both@example.org", tomorrow)
    # A paper sent once, as a keyword pick or as trending, is never trending again.
    assert [p["trending"] for p in both2] == [True, True]
    assert not {p["id"] for p in both2} & {p["id"] for p in both1}
    _send(project, monkeypatch, tomorrow)
    assert _sent(db_url, "top@example.org")[1] == [p["id"] for p in day2]

    # On 2026-01-13 (newsletter.trending_days, default 3: listed on 2026-01-10 or later)
    # yesterday's papers are no longer candidates; today's still are, minus those sent.
    later = NOW + timedelta(days=3, hours=1)
    day5 = _match(project, "top@example.org", later)
    today_ids = {
        it["paper"]["id"] for it in json.loads((HF / "daily_papers-002.json").read_bytes())
    }
    assert day5 and {_paper(p) for p in day5} <= today_ids - sent - {_paper(p) for p in day2}
    assert _match(project, "top@example.org", later + timedelta(days=1)) == []
