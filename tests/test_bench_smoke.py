"""The benchmark runs end to end on a tiny workload and reports every figure.

No timing is asserted (speed targets live in ``make bench``); this proves the benchmark
drives the product's send path to the end: every subscriber gets an email, the SMTP
sink receives what was sent, and the JSON has the keys the README and the issue name.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from benchmarks.postfix_sink import PostfixSink, postfix_sink_path, sink_name
from benchmarks.run import NOW, bench_settings, load_workload, main
from newsletter.config import settings_from_mapping
from newsletter.db.core import connect
from newsletter.db.subscriber_reads import active_subscriber_ids
from newsletter.delivery import OutgoingMessage
from newsletter.delivery.smtp import SmtpSender
from newsletter.pipeline.compose import Composer
from newsletter.pipeline.jobs import DigestJob
from newsletter.pipeline.parallel import ProcessComposer

REQUIRED = (
    "n_subscribers",
    "emails_per_second",
    "generation_emails_per_second",
    "speedup_vs_reference",
    "match_seconds",
    "profile_load_seconds",
    "render_inline_cpu_seconds",
    "mime_cpu_seconds",
    "outbox_and_send_wall_seconds",
    "total_seconds",
    "peak_rss_mb",
    "smtp_messages_per_second",
    "send_smtp_messages_per_second",
    # process CPU per email, by stage, and the honest ratios (issue 16)
    *(f"cpu_us_{s}" for s in ("db", "match", "tokens", "cards", "view", "html", "text")),
    "cpu_us_mime",
    "cpu_us_worker",
    "cpu_us_parent",
    "cpu_us_deliver",
    "cpu_us_sink",
    "cpu_us_total",
    "render_speedup_vs_reference",
    "reference_whole_emails_per_second",
    "cpu_speedup_vs_reference",
    "send_smtp_cpu_us_parent",
    "load_before",
)


def test_benchmark_writes_the_table_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "latest.json"
    assert main(["--n", "20", "--entries", "50", "--smtp-messages", "20", "--out", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    (run,) = report["runs"]
    missing = [k for k in REQUIRED if k not in run]
    assert not missing
    assert run["n_subscribers"] == 20 and run["n_entries"] == 50
    assert run["emails"] + run["skipped"] == 20 and run["emails"] > 0
    assert run["smtp_received"] == run["smtp_messages"] == 20
    # The whole send again, over SMTP: every email that was composed reached the sink.
    assert run["send_smtp_received"] == run["send_smtp_messages"] == run["emails"]
    assert 0 < run["peak_rss_mb"] < 4096
    assert run["emails_per_second"] > 0 and run["speedup_vs_reference"] > 0
    assert run["bytes_per_email"] > 1000
    assert report["smtp_messages_per_second"] == run["smtp_messages_per_second"] > 0
    assert run["smtp_sink"] in ("postfix smtp-sink", "builtin")
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["python"]
    assert report["machine"]["libraries"]["premailer"]
    # Every stage was measured in the workers, and the stages are a part of their CPU.
    stages = ("db", "match", "tokens", "cards", "view", "html", "text", "mime")
    assert all(run[f"cpu_us_{s}"] > 0 for s in stages)
    assert sum(run[f"cpu_us_{s}"] for s in stages) <= run["cpu_us_worker"] * 1.001
    assert run["reference_whole_emails"] == run["emails"]  # all 20, the reference way
    assert run["cpu_us_deliver"] > 0 and run["cpu_us_parent"] > 0
    if report["peer"]:  # rss2email installed (make bench): the same 50 entries as mail
        assert report["peer"]["peer_emails"] == 50 and report["peer"]["peer_cpu_us_per_email"] > 0
    table = capsys.readouterr().out
    assert table.startswith("| N | load | generate/s (wall) |") and "| 20 |" in table
    assert "| db | match | tokens | cards |" in table
    assert ("| rss2email " in table) == bool(report["peer"])


@pytest.mark.skipif(
    postfix_sink_path() is None,
    reason="Postfix's smtp-sink is not installed (apt-get install postfix)",
)
def test_postfix_smtp_sink_counts_what_the_sender_delivered() -> None:
    # make bench measures against smtp-sink where installed (its CPU is a small share of
    # the two cores); its count is what the benchmark checks every send against.
    data = b"Subject: x\r\n\r\n" + b"line\r\n" * 2000
    with PostfixSink() as sink:
        sender = SmtpSender(
            settings_from_mapping({"smtp": {"host": "127.0.0.1", "port": sink.port}}).smtp
        )
        for i in range(5):
            sender.send(OutgoingMessage("a@example.org", f"r{i}@example.org", data))
        sender.close()
    assert sink.messages == 5
    assert sink_name("auto") == "postfix smtp-sink" and sink_name("builtin") == "builtin"


def test_process_composer_composes_exactly_what_the_composer_does(
    tmp_path: Path, db_url: str
) -> None:
    """Composing in forked workers gives the same drafts, byte for byte, as in-process."""
    settings = bench_settings(tmp_path, db_url=db_url)
    load_workload(settings, 12, 40, seed=7)
    engine = connect(db_url, migrate=False)
    try:
        with Session(engine) as session:
            ids = active_subscriber_ids(session)
            requests = [
                DigestJob(sid, NOW.date().isoformat(), NOW - timedelta(days=1), NOW, digest_id=i)
                for i, sid in enumerate(ids, start=1)
            ]
            serial = Composer(settings, body_8bit=True)(session, requests)  # a send's
            timings: dict[str, float] = {}
            with ProcessComposer(settings, workers=2, timings=timings) as parallel:
                forked = parallel(session, requests)
                again = parallel(session, requests[:3])  # small: in-process
    finally:
        engine.dispose()
    assert len(ids) == 12 and any(d is not None for d in serial.values())
    assert forked == serial
    assert again == {sid: serial[sid] for sid in ids[:3]}
    assert timings["compose"] > 0 and timings["compose_wall"] > 0 and timings["compose_cpu"] > 0
