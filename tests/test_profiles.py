"""Reading and validating YAML profiles: every key, every problem, real line numbers."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from newsletter.domain import Keyword, Profile
from newsletter.errors import ProfileError
from newsletter.profiles import LoadResult, normalise_email, parse_profiles, read_profiles

ISSUE_EXAMPLE = """\
email: ada@example.org
name: Ada Lovelace            # optional
keywords:                     # an entry matching any keyword qualifies
  - bilevel optimization
  - preference optimization
  - term: RLHF
    weight: 2                 # optional, default 1
exclude:                      # an entry matching any of these is never sent
  - survey
max_items: 10                 # optional, default from config
frequency: daily              # daily | weekly (weekly sends on `weekday`, default monday)
send_time: "07:30"            # optional, local time in `timezone`; default from config
timezone: Europe/Berlin       # optional IANA name; default from config
active: true                  # optional
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def parse(text: str) -> tuple[list[Profile], list[ProfileError]]:
    profiles, problems, _invalid = parse_profiles(text, source="p.yaml")
    return profiles, problems


def only_problem(text: str) -> ProfileError:
    profiles, problems = parse(text)
    assert profiles == []
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


# -- the contract ----------------------------------------------------------------------


def test_the_issue_example_reads_every_key() -> None:
    profiles, problems = parse(ISSUE_EXAMPLE)
    assert problems == []
    assert profiles == [
        Profile(
            email="ada@example.org",
            name="Ada Lovelace",
            keywords=(
                Keyword("bilevel optimization"),
                Keyword("preference optimization"),
                Keyword("RLHF", weight=2.0),
            ),
            exclude=(Keyword("survey"),),
            max_items=10,
            frequency="daily",
            weekday=0,
            send_time=time(7, 30),
            timezone="Europe/Berlin",
            active=True,
            source="p.yaml",
            line=1,
        )
    ]


def test_a_minimal_profile_takes_the_defaults() -> None:
    [p], problems = parse("email: b@example.org\nkeywords: [diffusion]\n")
    assert problems == []
    assert (p.name, p.max_items, p.frequency, p.weekday, p.send_time, p.timezone, p.active) == (
        None,
        None,
        "daily",
        0,
        None,
        None,
        True,
    )
    assert p.exclude == ()


def test_keyword_modifiers_exact_and_field_with_aliases() -> None:
    [p], problems = parse(
        "email: c@example.org\n"
        "keywords:\n"
        "  - {term: Transformers, exact: true}\n"
        "  - {term: RL, field: title, weight: 1.5}\n"
        "  - {term: cs.LG, field: tags}\n"
        "  - {term: Turing, field: authors}\n"
        "  - {term: reward, field: summary}\n"
    )
    assert problems == []
    assert p.keywords == (
        Keyword("Transformers", exact=True),
        Keyword("RL", weight=1.5, field="title"),
        Keyword("cs.LG", field="category"),
        Keyword("Turing", field="author"),
        Keyword("reward", field="abstract"),
    )


def test_plain_keywords_are_taken_as_written() -> None:
    # YAML would make these a number, a boolean and a float; as keywords they are words.
    [p], problems = parse("email: d@example.org\nkeywords: [2024, yes, 1e3, '  spaced   out ']\n")
    assert problems == []
    assert [k.term for k in p.keywords] == ["2024", "yes", "1e3", "spaced out"]


def test_a_file_may_hold_a_list_of_profiles_and_several_documents() -> None:
    text = (
        "- email: a@example.org\n  keywords: [x]\n"
        "- email: b@example.org\n  keywords: [y]\n"
        "---\n"
        "email: c@example.org\nkeywords: [z]\n"
    )
    profiles, problems = parse(text)
    assert problems == []
    assert [(p.email, p.line) for p in profiles] == [
        ("a@example.org", 1),
        ("b@example.org", 3),
        ("c@example.org", 6),
    ]


def test_merge_keys_share_defaults_in_a_list() -> None:
    text = (
        "- &defaults\n  email: a@example.org\n  keywords: [x]\n  frequency: weekly\n"
        "  timezone: Asia/Kolkata\n"
        "- <<: *defaults\n  email: b@example.org\n"
    )
    profiles, problems = parse(text)
    assert problems == []
    assert [(p.email, p.frequency, p.timezone) for p in profiles] == [
        ("a@example.org", "weekly", "Asia/Kolkata"),
        ("b@example.org", "weekly", "Asia/Kolkata"),
    ]


def test_email_is_stripped_and_lower_cased() -> None:
    assert normalise_email("  Ada.Lovelace@Example.ORG ") == "ada.lovelace@example.org"
    [p], _ = parse("email: ' Ada@Example.ORG '\nkeywords: [x]\n")
    assert p.email == "ada@example.org"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("monday", 0), ("Friday", 4), ("sun", 6), ("WED", 2), (3, 3), (0, 0), (6, 6)],
)
def test_weekday_by_name_abbreviation_or_number(value: object, expected: int) -> None:
    [p], problems = parse(
        f"email: a@example.org\nkeywords: [x]\nfrequency: weekly\nweekday: {value}\n"
    )
    assert problems == []
    assert (p.frequency, p.weekday) == ("weekly", expected)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("7:30", time(7, 30)),
        ("12:05", time(12, 5)),
        ('"00:00"', time(0, 0)),
        ("'23:59'", time(23, 59)),
    ],
)
def test_send_time_quoted_or_not(raw: str, expected: time) -> None:
    # Unquoted 12:05 is a base-60 integer to YAML 1.1; the text as written is used.
    [p], problems = parse(f"email: a@example.org\nkeywords: [x]\nsend_time: {raw}\n")
    assert problems == []
    assert p.send_time == expected


# -- one problem of each kind, with its real line ----------------------------------------


def test_invalid_email() -> None:
    problem = only_problem("name: Ada\nemail: ada(at)example.org\nkeywords: [x]\n")
    assert str(problem) == (
        "p.yaml:2: email: invalid email 'ada(at)example.org': expected an address like "
        "name@example.org"
    )


@pytest.mark.parametrize(
    "email",
    ["ada@", "@example.org", "ada@example", "a b@example.org", "ada@-x-.org", "ada@@example.org"],
)
def test_malformed_addresses_are_rejected(email: str) -> None:
    problem = only_problem(f"email: '{email}'\nkeywords: [x]\n")
    assert (problem.line, problem.field) == (1, "email")


def test_missing_email() -> None:
    problem = only_problem("name: Ada\nkeywords: [x]\n")
    assert str(problem) == "p.yaml:1: email: required: the subscriber's address"


def test_unknown_key_suggests_the_close_one() -> None:
    problem = only_problem("email: a@example.org\nkeywords: [x]\n\ntimezon: UTC\n")
    assert str(problem) == "p.yaml:4: timezon: unknown key (did you mean 'timezone'?)"


def test_unknown_key_without_a_close_one_lists_the_keys() -> None:
    problem = only_problem("email: a@example.org\nkeywords: [x]\ncolour: blue\n")
    assert problem.line == 3
    assert "expected one of: email, name, keywords" in problem.detail


def test_unknown_key_inside_a_keyword() -> None:
    problem = only_problem("email: a@example.org\nkeywords:\n  - term: x\n    wieght: 2\n")
    assert str(problem) == "p.yaml:4: keywords.wieght: unknown key (did you mean 'weight'?)"


@pytest.mark.parametrize(
    ("line", "field", "detail"),
    [
        ("max_items: ten", "max_items", "expected a whole number, got a string"),
        ("max_items: 0", "max_items", "expected 1 to 1000, got 0"),
        ("active: maybe", "active", "expected true or false, got a string"),
        ("name: [Ada]", "name", "expected a string, got a list"),
        ("frequency: hourly", "frequency", "expected daily or weekly, got 'hourly'"),
        ("keywords: diffusion", "keywords", "expected a list, got a string"),
        ("exclude: {a: 1}", "exclude", "expected a list, got a mapping"),
    ],
)
def test_wrong_types(line: str, field: str, detail: str) -> None:
    text = (
        "email: a@example.org\n" + ("" if field == "keywords" else "keywords: [x]\n") + line + "\n"
    )
    problem = only_problem(text)
    assert (problem.line, problem.field, problem.detail) == (text.count("\n"), field, detail)


@pytest.mark.parametrize(
    ("item", "field", "detail"),
    [
        (
            "{term: x, weight: -1}",
            "keywords.weight",
            "expected a number above 0 and at most 1000, got -1",
        ),
        (
            "{term: x, weight: heavy}",
            "keywords.weight",
            "expected a number above 0 and at most 1000, got 'heavy'",
        ),
        ("{term: x, exact: 3}", "keywords.exact", "expected true or false, got a number"),
        (
            "{term: x, field: body}",
            "keywords.field",
            "expected title, abstract, author or category, got 'body'",
        ),
        ("{weight: 2}", "keywords.term", "required: the word or phrase to match"),
    ],
)
def test_wrong_keyword_modifiers(item: str, field: str, detail: str) -> None:
    problem = only_problem(f"email: a@example.org\nkeywords:\n  - {item}\n")
    assert (problem.line, problem.field, problem.detail) == (3, field, detail)


def test_weight_has_no_place_in_exclude() -> None:
    problem = only_problem(
        "email: a@example.org\nkeywords: [x]\nexclude:\n  - {term: y, weight: 2}\n"
    )
    assert (problem.line, problem.field) == (4, "exclude.weight")


def test_unknown_timezone_suggests_the_right_spelling() -> None:
    problem = only_problem("email: a@example.org\nkeywords: [x]\ntimezone: europe/berlin\n")
    assert str(problem) == (
        "p.yaml:3: timezone: unknown timezone 'europe/berlin' (did you mean 'Europe/Berlin'?)"
    )
    problem = only_problem("email: a@example.org\nkeywords: [x]\ntimezone: Europe/Berln\n")
    assert "did you mean 'Europe/Berlin'?" in problem.detail
    problem = only_problem("email: a@example.org\nkeywords: [x]\ntimezone: Mars/Olympus\n")
    assert problem.detail == "unknown timezone 'Mars/Olympus'"


@pytest.mark.parametrize("item", ["''", "'   '", "~", "{term: ''}"])
def test_empty_keyword(item: str) -> None:
    problem = only_problem(f"email: a@example.org\nkeywords:\n  - good\n  - {item}\n")
    assert (problem.line, problem.detail) == (4, "empty keyword")


def test_keyword_without_letters_or_digits() -> None:
    problem = only_problem("email: a@example.org\nkeywords:\n  - '!!!'\n")
    assert problem.detail == "keyword '!!!' has no letters or digits"


def test_stop_word_only_keyword_is_rejected() -> None:
    problem = only_problem("email: a@example.org\nkeywords:\n  - x\n  - the of\n")
    assert problem.line == 4
    assert problem.detail.startswith("keyword 'the of' has only stop words")


def test_missing_and_empty_keyword_lists() -> None:
    assert only_problem("email: a@example.org\n").detail == (
        "required: a list of at least one keyword "
        "(or trending: N for the N most upvoted papers alone)"
    )
    assert (
        only_problem("email: a@example.org\nkeywords: []\n").detail
        == "expected at least one keyword (or trending: N alone)"
    )


def test_trending_alone_is_a_profile_and_its_range_is_checked() -> None:
    profiles, problems = parse("email: a@example.org\ntrending: 10\n")
    assert problems == [] and [(p.keywords, p.trending) for p in profiles] == [((), 10)]
    both, problems = parse("email: a@example.org\nkeywords: [RLHF]\ntrending: 3\n")
    assert problems == [] and both[0].trending == 3
    assert only_problem("email: a@example.org\ntrending: 0\n").detail == "expected 1 to 50, got 0"
    assert only_problem("email: a@example.org\ntrending: 51\n").detail == "expected 1 to 50, got 51"


def test_repeated_keyword_and_repeated_key() -> None:
    profiles, problems = parse(
        "email: a@example.org\nkeywords:\n  - Multi-Objective\n  - multi objective\n"
        "  - {term: multi objective, field: title}\nemail: b@example.org\n"
    )
    assert profiles == []
    assert [str(p) for p in problems] == [
        "p.yaml:6: email: repeated key (first on line 1)",
        "p.yaml:4: keywords: repeated keyword 'multi objective' (first on line 3)",
    ]


@pytest.mark.parametrize("value", ["'25:00'", "'7.30'", "'07:60'", "soon", "[7, 30]"])
def test_bad_send_time(value: str) -> None:
    problem = only_problem(f"email: a@example.org\nkeywords: [x]\nsend_time: {value}\n")
    assert (problem.line, problem.field) == (3, "send_time")
    assert problem.detail.startswith('expected a time like "07:30"')


@pytest.mark.parametrize("value", ["someday", 7, -1, "m"])
def test_bad_weekday(value: object) -> None:
    problem = only_problem(f"email: a@example.org\nkeywords: [x]\nweekday: {value}\n")
    assert (problem.line, problem.field) == (3, "weekday")


def test_yaml_syntax_error_gives_the_line_of_the_mark() -> None:
    problem = only_problem("email: a@example.org\nkeywords:\n  - x\n  - [y\nname: Ada\n")
    assert problem.line == 5
    assert problem.detail.startswith("YAML syntax error: ")
    problem = only_problem("email: a@example.org\nkeywords: [x]\n\tname: Ada\n")
    assert problem.line == 3


def test_a_profile_that_is_not_a_mapping() -> None:
    profiles, problems = parse("- email: a@example.org\n  keywords: [x]\n- just a string\n")
    assert [p.email for p in profiles] == ["a@example.org"]
    assert [str(p) for p in problems] == [
        "p.yaml:3: expected a profile (email: ..., keywords: ...), got a string"
    ]


def test_every_problem_is_reported_not_just_the_first() -> None:
    profiles, problems = parse(
        "email: nope\nkeywords: []\ntimezone: Nowhere/Else\nsend_time: '99:99'\nfrequncy: weekly\n"
    )
    assert profiles == []
    assert [(p.line, p.field) for p in problems] == [
        (5, "frequncy"),
        (1, "email"),
        (2, "keywords"),
        (4, "send_time"),
        (3, "timezone"),
    ]


# -- a directory of files ----------------------------------------------------------------


def read(directory: Path) -> LoadResult:
    return read_profiles(directory)


def test_directory_files_are_found_recursively_sorted_hidden_skipped(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", "email: b@example.org\nkeywords: [x]\n")
    write(tmp_path, "a.yml", "email: a@example.org\nkeywords: [x]\n")
    write(tmp_path, "team/c.yaml", "email: c@example.org\nkeywords: [x]\n")
    write(tmp_path, ".d.yaml", "email: d@example.org\nkeywords: [x]\n")
    write(tmp_path, ".git/e.yaml", "email: e@example.org\nkeywords: [x]\n")
    write(tmp_path, "notes.txt", "not a profile")
    result = read(tmp_path)
    assert result.ok
    assert result.files == ("a.yml", "b.yaml", "team/c.yaml")
    assert [(p.email, p.source) for p in result.profiles] == [
        ("a@example.org", "a.yml"),
        ("b@example.org", "b.yaml"),
        ("c@example.org", "team/c.yaml"),
    ]


def test_duplicate_email_across_files_names_both_and_applies_neither(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "email: ada@example.org\nkeywords: [x]\n")
    write(tmp_path, "b.yaml", "# the same person again\nemail: Ada@Example.org\nkeywords: [y]\n")
    write(tmp_path, "c.yaml", "email: c@example.org\nkeywords: [z]\n")
    result = read(tmp_path)
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    assert [str(p) for p in result.problems] == [
        f"{b}:2: email: duplicate email ada@example.org (also in {a}:1); neither is applied"
    ]
    assert [p.email for p in result.profiles] == ["c@example.org"]
    assert result.held_emails == {"ada@example.org"}


def test_broken_file_is_reported_and_the_others_still_load(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "email: a@example.org\nkeywords: [x]\n")
    write(tmp_path, "broken.yaml", "email: b@example.org\nkeywords: [x\n")
    write(tmp_path, "typo.yaml", "email: c@example.org\nkeywords: [x]\ntimezone: Nowhere\n")
    result = read(tmp_path)
    assert [p.email for p in result.profiles] == ["a@example.org"]
    assert [(Path(p.path).name, p.line) for p in result.problems] == [
        ("broken.yaml", 3),
        ("typo.yaml", 3),
    ]
    assert result.failed_files == {"broken.yaml", "typo.yaml"}
    # The address of a readable but invalid profile is held; the broken file's is unknown.
    assert result.held_emails == {"c@example.org"}


def test_empty_file_is_a_problem_so_its_subscribers_are_kept(tmp_path: Path) -> None:
    write(tmp_path, "empty.yaml", "# nothing yet\n")
    result = read(tmp_path)
    assert [str(p) for p in result.problems] == [
        f"{tmp_path / 'empty.yaml'}:1: no profile in this file (expected email:, keywords: ...)"
    ]
    assert result.failed_files == {"empty.yaml"}


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes(b"email: a@example.org\nname: Ren\xe9\nkeywords: [x]\n")
    result = read(tmp_path)
    assert [(p.line, p.detail) for p in result.problems] == [
        (2, "not UTF-8 text: invalid continuation byte")
    ]
    assert result.failed_files == {"latin1.yaml"}


def test_a_single_file_can_be_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "one.yaml", "email: a@example.org\nkeywords: [x]\n")
    result = read(path)
    assert result.files == ("one.yaml",)
    assert [p.email for p in result.profiles] == ["a@example.org"]


def test_missing_directory_raises_instead_of_looking_empty(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="no such directory or file"):
        read(tmp_path / "nope")


def test_the_bundled_sample_profiles_are_valid() -> None:
    result = read(Path(__file__).resolve().parent.parent / "subscribers")
    assert result.ok, [str(p) for p in result.problems]
    assert len(result.profiles) >= 3
    assert {p.frequency for p in result.profiles} == {"daily", "weekly"}


def test_a_bad_value_shared_through_an_alias_is_reported_once_and_invalidates_both() -> None:
    text = (
        "- &defaults\n  email: a@example.org\n  keywords: [x]\n  timezone: Nowhere/Else\n"
        "- <<: *defaults\n  email: b@example.org\n"
    )
    profiles, problems, invalid = parse_profiles(text, source="p.yaml")
    assert profiles == []
    assert [str(p) for p in problems] == ["p.yaml:4: timezone: unknown timezone 'Nowhere/Else'"]
    assert invalid == ["a@example.org", "b@example.org"]
