"""``[subscribe] edit_operator_files = true``: the web edits an operator-written file in
place, keeping its comments, order and other profiles; a feedback click does the same
and its Undo puts the bytes back."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine, select

from newsletter.db import session_scope
from newsletter.models import Subscriber
from newsletter.profiles import read_profiles
from newsletter.profiles.roundtrip import update_profile
from newsletter.tokens import make_feedback_token, make_token
from tests.support.selfservice import LIST_ID, SECRET, World, make_world
from tests.support.subscribers import Seed, add_entries, write_profile

TEAM = """\
# Team profiles: reviewed in git, one per person.
- email: ops@example.org   # the operator
  name: Ops
  keywords:
    # what we care about most
    - graph neural network
    - "BERT"   # the model
  frequency: daily

# Ada asked for weekly
- email: ada@example.org
  keywords: [protein folding]
  frequency: weekly
  weekday: monday
"""


@pytest.fixture
def world(tmp_path: Path, db_url: str, engine: Engine) -> World:
    w = make_world(tmp_path, db_url, engine, extra="edit_operator_files = true\n")
    (w.subscribers / "ops.yaml").unlink()
    write_profile(w.subscribers, "team.yaml", TEAM)
    w.cli("subscribers", "sync")
    return w


def _sub(world: World, email: str) -> tuple[int, str]:
    with session_scope(world.engine) as s:
        row = s.execute(
            select(Subscriber.id, Subscriber.token_salt).where(Subscriber.email == email)
        ).one()
    return int(row[0]), str(row[1])


def _prefs(world: World, email: str) -> str:
    sid, salt = _sub(world, email)
    return "/preferences/" + make_token(
        SECRET, subscriber_id=sid, list_id=LIST_ID, version=1, salt=salt
    )


def test_an_edit_keeps_the_operators_comments_and_the_other_profile(world: World) -> None:
    team = world.subscribers / "team.yaml"
    page = world.client.get(_prefs(world, "ops@example.org"))
    assert page.status_code == 200 and 'id="save"' in page.text  # a form, not read-only
    assert "graph neural network\nBERT</textarea>" in page.text
    r = world.client.post(
        _prefs(world, "ops@example.org"),
        data={
            "name": "Ops",
            "keywords": "graph neural network ^2\nBERT\nmessage passing",
            "frequency": "daily",
            "action": "save",
        },
    )
    assert r.status_code == 200 and 'id="saved"' in r.text, r.text
    text = team.read_text(encoding="utf-8")
    # Only the changed lines differ; comments, quoting, flow style and indentation stay.
    assert text == TEAM.replace(
        "    - graph neural network\n",
        "    - term: graph neural network\n      weight: 2\n",
    ).replace("# the model\n", "# the model\n    - message passing\n"), text
    data = yaml.safe_load(text)
    assert data[0]["keywords"] == [
        {"term": "graph neural network", "weight": 2},
        "BERT",
        "message passing",
    ]
    assert data[1] == {
        "email": "ada@example.org",
        "keywords": ["protein folding"],
        "frequency": "weekly",
        "weekday": "monday",
    }
    assert read_profiles(world.subscribers).ok
    with session_scope(world.engine) as s:
        sub = s.scalar(select(Subscriber).where(Subscriber.email == "ops@example.org"))
        assert sub is not None
        assert [k["term"] for k in sub.profile["keywords"]][-1] == "message passing"


def test_feedback_on_an_operator_file_keeps_comments_and_undo_restores_bytes(
    world: World,
) -> None:
    team = world.subscribers / "team.yaml"
    before = team.read_bytes()
    sid, salt = _sub(world, "ops@example.org")
    now = datetime.now(UTC)
    [eid] = add_entries(
        world.engine,
        [Seed(title="A graph neural network for molecules", first_seen=now - timedelta(hours=1))],
    )
    token = make_feedback_token(
        SECRET, subscriber_id=sid, list_id=LIST_ID, version=1, salt=salt, entry_id=eid,
        direction="more",
    )  # fmt: skip
    r = world.client.post(f"/feedback/{token}")
    assert r.status_code == 200, r.text
    text = team.read_text(encoding="utf-8")
    assert "# what we care about most" in text and "# Ada asked for weekly" in text
    assert yaml.safe_load(text)[0]["keywords"][0] == {"term": "graph neural network", "weight": 2}
    undo = re.search(r'action="(/feedback/undo/[^"]+)"', r.text)
    assert undo
    assert world.client.post(undo.group(1)).status_code == 200
    assert team.read_bytes() == before


def test_round_trip_keeps_indentation_and_unmanaged_keys() -> None:
    text = "email: a@example.org  # me\nactive: true\nkeywords:\n- graph\n- trees\n"
    out = update_profile(
        text,
        "a@example.org",
        {"email": "a@example.org", "keywords": ["graph", "forests"]},
        source="a.yaml",
        managed=("keywords", "exclude"),
    )
    assert out == "email: a@example.org  # me\nactive: true\nkeywords:\n- graph\n- forests\n"
