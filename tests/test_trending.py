"""Trending picks and the popularity blend, end to end through the CLI.

The Daily Papers pages of ``../shared/fixtures/hf-api/`` are served on 127.0.0.1,
fetched, and a keyword-less ``trending: 5`` profile asks ``match`` what its digest
would carry.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from newsletter.cli import cli
from tests.conftest import SHARED
from tests.support.http import FeedServer, Route
from tests.support.subscribers import write_profile

HF = SHARED / "fixtures" / "hf-api"
TOP5 = "email: top@example.org\ntrending: 5\n"
RL = "email: rl@example.org\nkeywords: [reinforcement learning]\nmax_items: 3\n"


def _serve(server: FeedServer, day_pages: dict[str, str]) -> str:
    for day, page in day_pages.items():
        server.route(
            f"/api/daily_papers?date={day}",
            Route(body=(HF / page).read_bytes(), content_type="application/json"),
        )
    return server.url("/api/daily_papers")


def _days(now: datetime) -> list[str]:
    return [(now.date() - timedelta(days=n)).isoformat() for n in (1, 0)]


@pytest.fixture
def project(tmp_path: Path, db_url: str, feed_server: FeedServer) -> Path:
    yesterday, today = _days(datetime.now(UTC))
    url = _serve(feed_server, {yesterday: "daily_papers-001.json", today: "daily_papers-002.json"})
    (tmp_path / "newsletter.toml").write_text(
        f'[database]\nurl = "{db_url}"\n\n[newsletter]\nsubscribers_dir = "subscribers"\n'
        "popularity_weight = 1.5\n\n"
        f'[[feeds]]\nname = "hf"\ntype = "hf-daily-papers"\nurl = "{url}"\ndays = 1\n',
        encoding="utf-8",
    )
    write_profile(tmp_path / "subscribers", "top.yaml", TOP5)
    write_profile(tmp_path / "subscribers", "rl.yaml", RL)
    return tmp_path


def invoke(project: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(project / "newsletter.toml"), *args])


def _match(project: Path, email: str) -> list[dict[str, Any]]:
    as_of = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    result = invoke(project, "match", "--subscriber", email, "--as-of", as_of, "--json")
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
    by_link = {p["link"].rsplit("/", 1)[1]: p["upvotes"] for p in picks}
    assert all(votes[pid] == n for pid, n in by_link.items())


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

    yesterday = _days(datetime.now(UTC))[0]
    _serve(feed_server, {yesterday: "daily_papers-001-later.json"})
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
