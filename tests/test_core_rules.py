"""The pure rules of core/: paths, canonical JSON, the audit chain and the wire schemas.

Table-driven: each row is one case, and each case names what it expects.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from core.canonical import canonical_bytes, is_canonical, sha256_hex
from core.chain import GENESIS_HASH, format_time, seal, verify_chain
from core.errors import Invalid
from core.paths import MAX_NAME_BYTES, MAX_PATH_BYTES, normalise_path
from core.schemas import ReportBatch, TokenCreate, VerifyResult, VersionReport

# --------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("plan.docx", "plan.docx"),
        ("a/b/c.txt", "a/b/c.txt"),
        ("./a/./b.txt", "a/b.txt"),
        ("a//b///c.txt", "a/b/c.txt"),
        ("a/b/", "a/b"),
        ("dir.with.dots/..hidden", "dir.with.dots/..hidden"),
        ("a/...", "a/..."),
        ("Überweisung 2021 (final).docx", "Überweisung 2021 (final).docx"),
        ("日本/計画.xlsx", "日本/計画.xlsx"),
        ("emoji 😀.txt", "emoji 😀.txt"),
        ("ab:c.txt", "ab:c.txt"),  # a drive letter is one letter and a colon
        ("notes/c:d.txt", "notes/c:d.txt"),
        ("a" * MAX_NAME_BYTES, "a" * MAX_NAME_BYTES),
        ("é" * (MAX_NAME_BYTES // 2), "é" * (MAX_NAME_BYTES // 2)),
        (("a" * 99 + "/") * 19 + "b" * 99, ("a" * 99 + "/") * 19 + "b" * 99),  # 2,000 bytes
    ],
)
def test_good_paths_are_normalised(raw, clean):
    assert normalise_path(raw) == clean


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("", "names no file"),
        (".", "names no file"),
        ("./", "names no file"),
        ("//", "absolute"),
        ("..", "'..'"),
        ("../secret", "'..'"),
        ("a/../../etc/passwd", "'..'"),
        ("a/b/..", "'..'"),
        ("/etc/passwd", "absolute"),
        ("C:/Windows/win.ini", "absolute"),
        ("c:relative.txt", "absolute"),  # drive-relative on Windows
        ("a\\b.txt", "'\\'"),
        ("..\\..\\x", "'\\'"),
        ("a\x00b", "NUL"),
        ("a\nb", "control character"),
        ("a\tb", "control character"),
        ("a\x1bb", "control character"),
        ("a\x7fb", "control character"),
        ("bad\udcff.txt", "UTF-8"),  # os.fsdecode's spelling of an undecodable byte
        ("\ud800", "UTF-8"),
        ("a/" * (MAX_PATH_BYTES // 2) + "b", "longer than"),
        ("a" * (MAX_NAME_BYTES + 1), f"over {MAX_NAME_BYTES} bytes"),
        ("é" * (MAX_NAME_BYTES // 2 + 1), f"over {MAX_NAME_BYTES} bytes"),  # 2 bytes each
        ("日" * 700, f"over {MAX_NAME_BYTES} bytes"),
    ],
)
def test_bad_paths_are_refused_with_a_reason(raw, says):
    with pytest.raises(Invalid) as caught:
        normalise_path(raw)
    assert says in caught.value.detail


def test_refusal_names_what_was_checked():
    with pytest.raises(Invalid, match=r"^from_path"):
        normalise_path("../x", what="from_path")


# ------------------------------------------------------------ canonical JSON


@pytest.mark.parametrize(
    ("value", "text"),
    [
        # RFC 8785 §3.2.2.3 number serialisation (ECMAScript's Number.prototype.toString).
        (0, "0"),
        (-0.0, "0"),
        (1.0, "1"),
        (100.0, "100"),
        (4.50, "4.5"),
        (0.1, "0.1"),
        (0.002, "0.002"),
        (1e-7, "1e-7"),
        (0.000001, "0.000001"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1e30, "1e+30"),
        (-1.5e-10, "-1.5e-10"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (333333333.33333329, "333333333.3333333"),
        (2**53 - 1, "9007199254740991"),
        # Strings: only '"', '\\' and controls below U+0020 are escaped, in lower-case hex.
        ("\u000f", '"\\u000f"'),
        ("\b\f\n\r\t", '"\\b\\f\\n\\r\\t"'),
        ('"\\', '"\\"\\\\"'),
        ("/", '"/"'),
        ("\u007f", '"\u007f"'),
        ("é€😀", '"é€😀"'),
        ("\u2028", '"\u2028"'),
        # Literals and structure: no whitespace anywhere.
        ([None, True, False], "[null,true,false]"),
        ({"b": [1, {"d": 2, "c": 3}], "a": {}}, '{"a":{},"b":[1,{"c":3,"d":2}]}'),
    ],
)
def test_canonical_encoding_follows_rfc_8785(value, text):
    assert canonical_bytes(value) == text.encode("utf-8")


def test_keys_sort_by_utf16_code_units_not_code_points():
    # The RFC's own example: U+1F600 is the surrogate pair D83D DE00, which sorts before
    # U+FB33 in UTF-16 although it comes after it as a code point.
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    keys = list(json.loads(canonical_bytes(value)))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def test_the_rfc_8785_worked_example():
    source = (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical_bytes(json.loads(source)) == expected.encode("utf-8")
    assert is_canonical(expected.encode("utf-8"))


@pytest.mark.parametrize(
    "data",
    [
        b'{"b":1,"a":2}',  # keys out of order
        b'{"a": 1}',  # whitespace
        b'{"a":1}\n',  # trailing newline
        b'{"a":1.0}',  # a number spelt two ways
        b'{"a":1E30}',
        b'{"a":-0}',
        b'{"a":"\\u00e9"}',  # escaped where the literal character is canonical
        b'{"a":"\\/"}',
        b'{"a":1,"a":1}',  # duplicate keys
        b'{"a":NaN}',  # not JSON in RFC 8785's sense
        b'{"a":9007199254740993}',  # beyond IEEE 754 exact integers
        b'{"a":"\xff"}',  # not UTF-8
        b'{"a":1',  # not JSON at all
        b"",
    ],
)
def test_is_canonical_rejects_other_spellings(data):
    assert not is_canonical(data)


@pytest.mark.parametrize("value", [{}, [], "x", 0, {"z": [1, "é", None], "a": {"k": 0.5}}])
def test_canonical_bytes_are_canonical(value):
    assert is_canonical(canonical_bytes(value))


def test_sha256_hex_is_lower_case_hex():
    assert sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# ----------------------------------------------------------------- the chain

T0 = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)


def _chain(n: int = 5):
    events, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        event = seal(
            seq=seq,
            time=T0 + timedelta(seconds=seq),
            actor={"id": "person:1", "name": "Admin", "office": "Administration", "role": "admin"},
            action="office.created",
            subject={"office": seq},
            details={"name": f"Office {seq}"},
            prev=prev,
        )
        events.append(event)
        prev = event.hash
    return events


def _triples(events):
    return [(e.body["seq"], e.canonical, e.hash) for e in events]


def _resealed(body: dict) -> tuple[int, bytes, str]:
    """An event as a forger would write it: consistent bytes and hash."""
    data = canonical_bytes(body)
    return body["seq"], data, sha256_hex(data)


def test_seal_builds_the_canonical_body_and_its_hash():
    event = _chain(1)[0]
    assert event.body == {
        "seq": 1,
        "time": "2024-03-01T09:30:01.000000Z",
        "actor": {"id": "person:1", "name": "Admin", "office": "Administration", "role": "admin"},
        "action": "office.created",
        "subject": {"office": 1},
        "details": {"name": "Office 1"},
        "prev": GENESIS_HASH,
    }
    assert event.canonical == canonical_bytes(event.body)
    assert event.hash == sha256_hex(event.canonical)
    assert is_canonical(event.canonical)


def test_a_clean_chain_verifies():
    events = _chain(5)
    report = verify_chain(_triples(events))
    assert report.ok
    assert (report.checked, report.head_seq, report.head_hash) == (5, 5, events[-1].hash)


def test_an_empty_chain_verifies_with_the_genesis_head():
    report = verify_chain([])
    assert report.ok
    assert (report.checked, report.head_seq, report.head_hash) == (0, 0, GENESIS_HASH)


def _edit_one_byte(triples):
    seq, data, digest = triples[2]
    triples[2] = (seq, data.replace(b"Office 3", b"Office 8"), digest)
    return triples


def _edit_and_rehash(triples):
    body = json.loads(triples[2][1])
    body["details"]["name"] = "Forged"
    triples[2] = _resealed(body)
    return triples


def _delete_third(triples):
    del triples[2]
    return triples


def _delete_first(triples):
    del triples[0]
    return triples


def _swap_second_and_third(triples):
    triples[1], triples[2] = triples[2], triples[1]
    return triples


def _change_prev(triples):
    body = json.loads(triples[2][1])
    body["prev"] = "f" * 64
    triples[2] = _resealed(body)
    return triples


def _non_canonical_body(triples):
    body = json.loads(triples[2][1])
    data = json.dumps(body, indent=1).encode()  # same content, other spelling
    triples[2] = (3, data, sha256_hex(data))
    return triples


def _body_names_another_seq(triples):
    body = json.loads(triples[2][1])
    body["seq"] = 30
    _, data, digest = _resealed(body)
    triples[2] = (3, data, digest)
    return triples


def _stored_hash_changed(triples):
    seq, data, _ = triples[3]
    triples[3] = (seq, data, "0" * 64)
    return triples


def _duplicate_event(triples):
    triples.insert(3, triples[2])
    return triples


@pytest.mark.parametrize(
    ("tamper", "first_broken", "reason"),
    [
        (_edit_one_byte, 3, "do not match its recorded hash"),
        (_edit_and_rehash, 4, "does not link"),
        (_delete_third, 3, "missing or out of order"),
        (_delete_first, 1, "missing or out of order"),
        (_swap_second_and_third, 2, "missing or out of order"),
        (_change_prev, 3, "does not link"),
        (_non_canonical_body, 3, "not in canonical"),
        (_body_names_another_seq, 3, "another sequence number"),
        (_stored_hash_changed, 4, "do not match its recorded hash"),
    ],
)
def test_tampering_is_caught_at_the_first_broken_event(tamper, first_broken, reason):
    report = verify_chain(tamper(_triples(_chain(5))))
    assert not report.ok
    assert report.first_broken.seq == first_broken
    assert reason in report.first_broken.reason
    # Everything before the break was checked and stands as the trusted head.
    assert report.checked == first_broken - 1
    assert report.head_seq == first_broken - 1


def test_a_repeated_event_breaks_the_chain_where_the_next_was_expected():
    report = verify_chain(_duplicate_event(_triples(_chain(5))))
    assert report.checked == 3
    assert report.first_broken.seq == 4


def test_a_check_resumes_from_a_trusted_point():
    events = _chain(6)
    resumed = verify_chain(_triples(events[3:]), start_seq=4, prev_hash=events[2].hash)
    assert resumed.ok
    assert (resumed.checked, resumed.head_seq, resumed.head_hash) == (3, 6, events[-1].hash)


@pytest.mark.parametrize(
    ("start_seq", "prev_index", "first_broken", "reason"),
    [
        (4, 1, 4, "does not link"),  # the trusted hash is not the one before event 4
        (3, 1, 3, "missing or out of order"),  # events resumed one too late
        (5, 2, 5, "missing or out of order"),  # events resumed one too early
    ],
)
def test_a_resumed_check_refuses_a_wrong_starting_point(
    start_seq, prev_index, first_broken, reason
):
    events = _chain(6)
    report = verify_chain(
        _triples(events[3:]), start_seq=start_seq, prev_hash=events[prev_index].hash
    )
    assert report.first_broken.seq == first_broken
    assert reason in report.first_broken.reason


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2024, 3, 1, 9, 30, tzinfo=UTC), "2024-03-01T09:30:00.000000Z"),
        (
            datetime(2024, 3, 1, 11, 30, 0, 5, tzinfo=timezone(timedelta(hours=2))),
            "2024-03-01T09:30:00.000005Z",
        ),
    ],
)
def test_times_have_one_spelling_in_utc(moment, text):
    assert format_time(moment) == text


def test_naive_times_are_refused_by_the_chain():
    with pytest.raises(ValueError, match="timezone-aware"):
        format_time(datetime(2024, 3, 1, 9, 30))


# ------------------------------------------------------------- wire schemas

SHA = "ab" * 32
COMMIT = "c" * 40
WHEN = "2024-03-01T09:30:00+00:00"


def _report(**fields) -> dict:
    return {"path": "a/plan.docx", "commit": COMMIT, "observed_at": WHEN, **fields}


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "created", "sha256": SHA, "size": 3},
        {"kind": "modified", "sha256": SHA, "size": 0},
        {"kind": "deleted"},  # a deletion carries no content
        {"kind": "deleted", "sha256": SHA, "size": 3},
        {"kind": "renamed", "from_path": "old/plan.docx", "sha256": SHA, "size": 3},
        {"kind": "modified", "sha256": SHA, "size": 3, "commit": "d" * 64},  # SHA-256 git
        {"kind": "modified", "sha256": SHA, "size": 3, "author": "alice", "author_hint": "uid 9"},
        {"kind": "modified", "sha256": SHA, "size": 3, "observed_at": "2024-03-01T10:30:00+01:00"},
    ],
)
def test_well_formed_reports_are_accepted(fields):
    report = VersionReport.model_validate(_report(**fields))
    assert report.kind.value == fields["kind"]
    assert report.observed_at.utcoffset() is not None


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"kind": "created"}, "needs 'sha256' and 'size'"),
        ({"kind": "modified", "sha256": SHA}, "needs 'sha256' and 'size'"),
        ({"kind": "modified", "size": 3}, "needs 'sha256' and 'size'"),
        ({"kind": "renamed", "sha256": SHA, "size": 3}, "needs 'from_path'"),
        ({"kind": "modified", "sha256": SHA, "size": 3, "from_path": "b"}, "only goes with"),
        ({"kind": "renamed", "sha256": SHA, "size": 3, "from_path": "./a/plan.docx"}, "same"),
        ({"kind": "modified", "sha256": SHA, "size": 3, "observed_at": "2024-03-01T09:30:00"},
         "time zone"),
        ({"kind": "modified", "sha256": "xyz", "size": 3}, "SHA-256"),
        ({"kind": "modified", "sha256": SHA, "size": -1}, "greater than or equal to 0"),
        ({"kind": "modified", "sha256": SHA, "size": 3, "commit": "abc"}, "git commit"),
        ({"kind": "modified", "sha256": SHA, "size": 3, "commit": "C" * 40}, "git commit"),
        ({"kind": "modified", "sha256": SHA, "size": 3, "path": "../x"}, "'..'"),
        ({"kind": "renamed", "sha256": SHA, "size": 3, "from_path": "/etc/x"}, "absolute"),
        ({"kind": "modified", "sha256": SHA, "size": 3, "author": "Not A User"}, "lower-case"),
        ({"kind": "modified", "sha256": SHA, "size": 3, "author_hint": "a\x00"}, "NUL"),
        ({"kind": "moved", "sha256": SHA, "size": 3}, "kind"),
        ({"kind": "modified", "sha256": SHA, "size": 3, "extra": 1}, "extra"),
    ],
)
def test_malformed_reports_are_refused(fields, says):
    with pytest.raises(ValidationError) as caught:
        VersionReport.model_validate(_report(**fields))
    assert says in str(caught.value)


def test_reports_normalise_paths_and_hashes():
    report = VersionReport.model_validate(
        _report(kind="renamed", path="./new//plan.docx", from_path="old/./plan.docx",
                sha256=SHA.upper(), size=3)
    )
    assert (report.path, report.from_path, report.sha256) == ("new/plan.docx", "old/plan.docx", SHA)


@pytest.mark.parametrize("count", [0, 1001])
def test_a_batch_holds_one_to_a_thousand_reports(count):
    with pytest.raises(ValidationError):
        ReportBatch.model_validate(
            {"reports": [_report(kind="deleted", path=f"f{i}") for i in range(count)]}
        )


@pytest.mark.parametrize(
    ("fields", "ok"),
    [
        ({"username": "alice"}, True),
        ({"folder": "plans"}, True),
        ({"folder": "plans", "label": "agent on host 1"}, True),
        ({}, False),
        ({"label": "nobody"}, False),
        ({"username": "alice", "folder": "plans"}, False),
    ],
)
def test_a_token_belongs_to_exactly_one_person_or_folder(fields, ok):
    if ok:
        token = TokenCreate.model_validate(fields)
        assert (token.username is None) != (token.folder is None)
    else:
        with pytest.raises(ValidationError, match="exactly one of 'username'"):
            TokenCreate.model_validate(fields)


def test_wire_models_refuse_unknown_fields():
    with pytest.raises(ValidationError, match="extra"):
        VerifyResult.model_validate({"sha256": SHA, "matches": [], "surprise": True})
