"""A simulated month of operation against the real CLI, with faults, kills and settling.

Each simulated day: the feeds grow (a file feed and one served over local HTTP, with
outages), ``fetch`` runs, then a few send rounds spread over the day — ``send`` or
``run --once`` in subprocesses, each at the simulated instant (``NEWSLETTER_NOW``),
some killed with SIGKILL, some run twice at once, some with the SMTP server
unreachable, with SMTP faults injected at random (421 on connect, 451 on RCPT and
after DATA, connections dropped mid-DATA, slow replies to DATA: a late 451, or a late
250 for a message already queued, which a kill turns into an ambiguous row). After
each round the operator settles ambiguous rows the documented way: the mail server's
log (the recording server) says whether the message arrived, then ``resend ID
--mark-sent`` or ``--send-again``.

At the end, faults off, everything due is sent, and the received mail is checked
against the database: no entry reaches a subscriber twice, and every entry that
matches a subscriber (its title carries one of their topics) and was first fetched
inside the span their sent digests cover arrived. The seed makes a run repeatable
(up to process timing under kills).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select

from newsletter.models import Digest, Entry, Subscriber
from tests.support.feeds import Item, atom
from tests.support.http import FeedServer, Route
from tests.support.sending import cli_env
from tests.support.smtp import Fault, SmtpTestServer, start_smtp_server

START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
ROUND_HOURS = (2, 8, 14, 20)  # UTC; send times below fall between them in every zone
TOPICS = ("quokka", "narwhal", "axolotl", "pangolin", "okapi", "tapir", "wombat", "capybara")
ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Sydney",
    "America/Sao_Paulo",
    "Pacific/Auckland",
)
LINK = re.compile(r"https://soak\.example/[a-z]+/\d+")
COMMAND_TIMEOUT = 180.0  # a command still running after this long is a hang


@dataclass
class Report:
    """What one simulated run did and found."""

    seed: int
    days: int
    subscribers: int
    messages: int = 0
    duplicates: int = 0
    lost: int = 0
    expected: int = 0
    ambiguous_settled: int = 0
    left_unsettled: int = 0  # digests still sending or pending once everything was sent
    kills: int = 0
    faults: int = 0
    smtp_down_runs: int = 0
    concurrent_runs: int = 0
    feed_outages: int = 0
    commands: int = 0
    hangs: list[str] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.duplicates or self.lost or self.left_unsettled or self.hangs or self.tracebacks
        )

    def line(self) -> str:
        return (
            f"seed {self.seed}: {self.days} days, {self.subscribers} subscribers: "
            f"{self.messages} messages, {self.duplicates} duplicates, "
            f"{self.lost} of {self.expected} entries lost, "
            f"{self.ambiguous_settled} ambiguous rows settled "
            f"({self.left_unsettled} left sending or pending), {self.kills} kills, "
            f"{self.faults} SMTP faults, {self.smtp_down_runs} runs with SMTP down, "
            f"{self.concurrent_runs} concurrent sends, {self.feed_outages} feed outages, "
            f"{len(self.tracebacks)} tracebacks, {len(self.hangs)} hangs, "
            f"{self.commands} commands -> {'OK' if self.ok else 'FAILED'}"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Month:
    """One seeded simulation in ``workdir`` against the database at ``db_url``."""

    def __init__(
        self, workdir: Path, db_url: str, *, seed: int, days: int, subscribers: int
    ) -> None:
        self.dir = workdir
        self.db_url = db_url
        self.rng = random.Random(seed)
        self.report = Report(seed=seed, days=days, subscribers=subscribers)
        self.n_subscribers = subscribers
        self.smtp: SmtpTestServer = start_smtp_server()
        # Slow replies stay under the client's timeout (5 s below): past it, a reply lost
        # after the final dot is retried like every MTA does (RFC 1047), by design.
        self.smtp.handler.stall_seconds = 3.0
        self.http = FeedServer().start()
        self.dead_port = _free_port()  # nothing listens there: "SMTP server down"
        self.items: dict[str, list[Item]] = {"file": [], "web": []}
        self.counter = 0
        self.emails: list[str] = []

    # -- set-up ----------------------------------------------------------------------

    def setup(self) -> None:
        subs = self.dir / "subscribers"
        subs.mkdir(parents=True, exist_ok=True)
        for i in range(self.n_subscribers):
            email = f"s{i:03d}@example.org"
            self.emails.append(email)
            topics = self.rng.sample(TOPICS, 2)
            weekly = self.rng.random() < 0.3
            lines = [
                f"email: {email}",
                "keywords:",
                *(f"  - {t}" for t in topics),
                "max_items: 50",
                f"frequency: {'weekly' if weekly else 'daily'}",
                f'send_time: "{self.rng.randrange(0, 24):02d}:{self.rng.choice((0, 30)):02d}"',
                f"timezone: {self.rng.choice(ZONES)}",
            ]
            if weekly:
                lines.append(f"weekday: {self.rng.randrange(7)}")
            (subs / f"s{i:03d}.yaml").write_text("\n".join(lines) + "\n")
        self._write_file_feed()
        self.http.route("/feed.atom", Route(body=atom(*self.items["web"])))
        config = [
            "[database]",
            f"url = {json.dumps(self.db_url)}",
            "[newsletter]",
            'subscribers_dir = "subscribers"',
            'outbox_dir = "outbox"',
            'from = "Soak Digest <digest@example.org>"',
            'delivery = "smtp"',
            'base_url = "https://digest.example.org"',
            "batch_size = 5",
            "[smtp]",
            'host = "127.0.0.1"',
            f"port = {self.smtp.port}",
            "timeout_seconds = 5.0",
            "max_attempts = 3",
            "retry_base_seconds = 0.05",
            "retry_max_seconds = 0.2",
            "[[feeds]]",
            'name = "file"',
            'url = "file-feed.atom"',
            "[[feeds]]",
            'name = "web"',
            f"url = {json.dumps(self.http.url('/feed.atom'))}",
        ]
        (self.dir / "newsletter.toml").write_text("\n".join(config) + "\n")

    def _write_file_feed(self) -> None:
        (self.dir / "file-feed.atom").write_bytes(atom(*self.items["file"]))

    def close(self) -> None:
        self.smtp.controller.stop()
        self.http.stop()

    # -- commands ----------------------------------------------------------------------

    def _env(self, now: datetime, **extra: str) -> dict[str, str]:
        return cli_env(NEWSLETTER_NOW=now.isoformat(), **extra)

    def _argv(self, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "newsletter",
            "--config",
            str(self.dir / "newsletter.toml"),
            *args,
        ]

    def _check(self, name: str, proc: subprocess.CompletedProcess[str] | Any, killed: bool) -> None:
        self.report.commands += 1
        err = proc.stderr or ""
        if "Traceback" in err and not killed:
            self.report.tracebacks.append(f"{name}: {err[-2000:]}")

    def cli(self, now: datetime, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run a command to its end (a hang is recorded, then killed)."""
        try:
            proc = subprocess.run(
                self._argv(*args),
                env=self._env(now, **env),
                cwd=self.dir,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
            )
        except subprocess.TimeoutExpired as e:
            self.report.hangs.append(f"{' '.join(args)} at {now:%Y-%m-%d %H:%M}")
            return subprocess.CompletedProcess(e.cmd, -9, "", "")
        self._check(" ".join(args), proc, killed=False)
        return proc

    def start(self, now: datetime, *args: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self._argv(*args),
            env=self._env(now, **env),
            cwd=self.dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(self, procs: list[tuple[subprocess.Popen[str], float | None]], label: str) -> None:
        """Wait for ``procs``; those with a kill delay get SIGKILL after it."""
        t0 = time.monotonic()
        for proc, kill_after in procs:
            killed = False
            if kill_after is not None:
                try:
                    proc.wait(timeout=max(0.0, kill_after - (time.monotonic() - t0)))
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    killed = True
                    self.report.kills += 1
            try:
                out, err = proc.communicate(timeout=COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                self.report.hangs.append(label)
                continue
            self._check(
                label, subprocess.CompletedProcess(proc.args, proc.returncode, out, err), killed
            )

    # -- the simulated days ------------------------------------------------------------

    def grow_feeds(self, day: int) -> None:
        for feed in ("file", "web"):
            for _ in range(self.rng.randint(3, 7)):
                self.counter += 1
                n = self.counter
                self.items[feed].append(
                    Item(
                        title=f"On the {self.rng.choice(TOPICS)} problem, part {n}",
                        id=f"urn:soak:{feed}:{n}",
                        link=f"https://soak.example/{feed}/{n}",
                        summary=f"Entry {n} of the {feed} feed.",
                        published=(START + timedelta(days=day)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    )
                )
            self.items[feed] = self.items[feed][-60:]  # a feed shows its latest entries
        self._write_file_feed()
        outage = self.rng.random() < 0.15
        self.report.feed_outages += outage
        self.http.route(
            "/feed.atom",
            Route(status=503, body=b"down") if outage else Route(body=atom(*self.items["web"])),
        )

    def inject_faults(self) -> None:
        if self.rng.random() < 0.5:
            return
        for _ in range(self.rng.randint(1, 3)):
            stage, reply = self.rng.choice(
                [
                    ("EHLO", "421 4.3.2 Service not available"),
                    ("RCPT", "451 4.7.1 Greylisted, try later"),
                    ("DATA", "451 4.3.0 Queue full"),
                    ("DATA", "drop"),
                    ("DATA", "stall"),  # no answer for a while, then 451
                    ("DATA", "accept-slowly"),  # queued, the 250 late: a kill makes it ambiguous
                ]
            )
            target = None if stage == "EHLO" else frozenset({self.rng.choice(self.emails)})
            self.smtp.add_fault(Fault(stage, reply, target, times=self.rng.randint(1, 2)))  # type: ignore[arg-type]
            self.report.faults += 1

    def send_round(self, now: datetime) -> None:
        self.inject_faults()
        env: dict[str, str] = {}
        if self.rng.random() < 0.1:
            env["NEWSLETTER_SMTP_PORT"] = str(self.dead_port)
            self.report.smtp_down_runs += 1
        command = ["send"] if self.rng.random() < 0.7 else ["run", "--once"]
        kill_after = self.rng.uniform(0.5, 4.0) if self.rng.random() < 0.25 else None
        procs = [(self.start(now, *command, **env), kill_after)]
        if self.rng.random() < 0.12:
            procs.append((self.start(now, "send", "--now", **env), None))
            procs.insert(0, (self.start(now, "send", "--now", **env), None))
            self.report.concurrent_runs += 1
        self.finish(procs, f"{' '.join(command)} at {now:%Y-%m-%d %H:%M}")

    def settle(self, now: datetime) -> None:
        """The operator's way: for each digest left ``sending`` (what ``resend`` lists),
        check the mail server's log, then ``resend ID --mark-sent`` or ``--send-again``.

        The rows are read from the database directly (every process has ended by now,
        so none is in flight): one CLI start per round saved, on a month of rounds.
        """
        engine = create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    select(Digest.id, Digest.message_id).where(Digest.status == "sending")
                ).all()
        finally:
            engine.dispose()
        if not rows:
            return
        received = {str(m.message["Message-ID"]) for m in self.smtp.messages}
        for digest_id, message_id in rows:
            action = "--mark-sent" if message_id in received else "--send-again"
            got = self.cli(now, "resend", str(digest_id), action)
            if got.returncode == 0:
                self.report.ambiguous_settled += 1
            else:
                self.report.details.append(f"resend {digest_id} {action}: {got.stderr[-300:]}")

    def run(self) -> Report:
        self.setup()
        first = START + timedelta(hours=1)
        for step in (("db", "upgrade"), ("subscribers", "sync")):
            got = self.cli(first, *step)
            if got.returncode != 0:
                raise RuntimeError(f"{' '.join(step)} failed: {got.stderr}")
        for day in range(self.report.days):
            base = START + timedelta(days=day)
            self.grow_feeds(day)
            self.cli(base + timedelta(hours=1), "fetch")
            for hour in ROUND_HOURS:
                now = base + timedelta(hours=hour, minutes=self.rng.randrange(30))
                self.send_round(now)
                self.settle(now + timedelta(minutes=40))
        self.smtp.handler.faults.clear()
        end = START + timedelta(days=self.report.days, hours=1)
        self.cli(end, "fetch")
        for i in range(3):  # faults off: everything due goes out, nothing is left to settle
            at = end + timedelta(hours=i)
            self.settle(at)
            self.cli(at, "send", "--now")
        self.settle(end + timedelta(hours=4))
        self.check()
        return self.report

    # -- the verdict -------------------------------------------------------------------

    def check(self) -> None:
        received: dict[str, Counter[str]] = defaultdict(Counter)
        for m in self.smtp.messages:
            links = set(LINK.findall(_text_of(m.message)))
            for rcpt in m.rcpt_tos:
                received[rcpt].update(links)
        self.report.messages = len(self.smtp.messages)
        engine = create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                subs = conn.execute(
                    select(
                        Subscriber.id, Subscriber.email, Subscriber.frequency, Subscriber.profile
                    )
                ).all()
                entries = conn.execute(select(Entry.title, Entry.link, Entry.first_seen_at)).all()
                rows = conn.execute(
                    select(
                        Digest.subscriber_id, Digest.status, Digest.created_at, Digest.window_end
                    )
                ).all()
        finally:
            engine.dispose()
        first_planned: dict[int, datetime] = {}
        covered: dict[int, datetime] = {}
        for sid, status, created, end in rows:
            if status in ("sending", "pending"):
                self.report.left_unsettled += 1
                self.report.details.append(f"digest of subscriber {sid} left {status}")
            if sid not in first_planned or created < first_planned[sid]:
                first_planned[sid] = created
            if status in ("sent", "skipped") and end is not None:
                covered[sid] = max(end, covered.get(sid, end))
        for sid, email, frequency, profile in subs:
            topics = {k["term"] for k in profile.get("keywords", [])}
            got = received.get(email, Counter())
            for link, n in got.items():
                if n > 1:
                    self.report.duplicates += 1
                    self.report.details.append(f"{email} got {link} {n} times")
            if sid not in covered:
                continue
            period = timedelta(days=7 if frequency == "weekly" else 1)
            lower = first_planned[sid] - period
            for title, link, seen in entries:
                words = set(title.replace(",", " ").split())
                if words & topics and lower < _aware(seen) <= _aware(covered[sid]):
                    self.report.expected += 1
                    if link not in got:
                        self.report.lost += 1
                        self.report.details.append(f"{email} never got {link} (seen {seen})")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _text_of(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    return part.get_content() if part is not None else ""


def run_month(workdir: Path, db_url: str, *, seed: int, days: int, subscribers: int) -> Report:
    month = Month(workdir, db_url, seed=seed, days=days, subscribers=subscribers)
    try:
        return month.run()
    finally:
        month.close()


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(
        prog="python -m tests.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seeds", default="1,2,3,4,5", help="comma-separated seeds")
    parser.add_argument("--subscribers", type=int, default=40)
    parser.add_argument(
        "--database",
        default="sqlite",
        help="sqlite (a file per run) or a PostgreSQL URL (a schema per run)",
    )
    args = parser.parse_args(argv)
    reports = []
    for seed in (int(s) for s in args.seeds.split(",")):
        with (
            tempfile.TemporaryDirectory(prefix=f"soak-{seed}-") as tmp,
            database(args.database, Path(tmp)) as url,
        ):
            report = run_month(
                Path(tmp), url, seed=seed, days=args.days, subscribers=args.subscribers
            )
            if not report.ok:  # keep the evidence: config, feeds, profiles, SQLite file
                kept = Path("soak-failures") / f"seed-{seed}"
                shutil.rmtree(kept, ignore_errors=True)
                shutil.copytree(tmp, kept)
                print(f"    kept the run in {kept}/", flush=True)
        print(report.line(), flush=True)
        for d in report.details[:20]:
            print("   ", d)
        for t in report.tracebacks[:3]:
            print("    traceback:", t)
        reports.append(report)
    return 0 if all(r.ok for r in reports) else 1


class database:
    """A fresh database: a SQLite file in ``tmp``, or a schema of its own on PostgreSQL."""

    def __init__(self, spec: str, tmp: Path) -> None:
        self.spec, self.tmp, self.schema = spec, tmp, None

    def __enter__(self) -> str:
        if self.spec == "sqlite":
            return f"sqlite:///{self.tmp / 'soak.db'}"
        import uuid

        from sqlalchemy import text
        from sqlalchemy.engine import make_url

        self.schema = f"soak_{uuid.uuid4().hex[:10]}"
        admin = create_engine(self.spec)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        admin.dispose()
        url = make_url(self.spec).update_query_dict({"options": f"-csearch_path={self.schema}"})
        return url.render_as_string(hide_password=False)

    def __exit__(self, *exc: object) -> None:
        if self.schema is None:
            return
        from sqlalchemy import text

        admin = create_engine(self.spec)
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{self.schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
