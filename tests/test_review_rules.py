"""The approval rules of core.review: the state machine, the policy arithmetic, whose move
it is, separation of duties and escalation.

Table-driven: each row is one case, and each case names what it expects.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.errors import Conflict, Forbidden, Invalid
from core.review import (
    REFUSALS,
    TRANSITIONS,
    Action,
    Decision,
    Mode,
    Party,
    Policy,
    ReviewState,
    Verdict,
    awaiting,
    decide,
    document_state,
    escalations,
    evaluate,
    make_policy,
    may_decide,
    parse_mode,
    withdraw,
)

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)  # submission
DUE = T0 + timedelta(days=2)
PARENTS = {"Legal": "Directorate", "Finance": "Directorate", "IT": "Services", "Top": None}


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def policy(spec: str, *parties: str, due: datetime | None = DUE, sod: bool = True) -> Policy:
    return make_policy(parties, spec, due=due, separation_of_duties=sod)


# every K from 1 to n, for n = 1, 2, 4 (K above n is refused: see the parse_mode tests)
QUORUMS = [(k, n) for n in (1, 2, 4) for k in range(1, n + 1)]


def offices(n: int) -> list[str]:
    return [f"office:O{i}" for i in range(1, n + 1)]


def run(pol: Policy, moves: list[tuple[str, str]]) -> tuple[ReviewState, tuple[Decision, ...]]:
    """Apply (party, verdict) moves through ``decide``, one distinct approver per move."""
    state, decisions = ReviewState.open, ()
    for i, (party_text, verdict) in enumerate(moves):
        party = Party.parse(party_text)
        person = party.name if party.kind == "person" else f"approver{i}"
        step = decide(
            pol,
            state,
            decisions,
            person=person,
            verdict=verdict,
            at=at(10 * (i + 1)),
            comment="" if verdict == "approve" else "not like this",
            person_offices_as_approver={party.name} if party.kind == "office" else set(),
            author="alice",
            submitter="sam",
        )
        state, decisions = step.state, step.decisions
    return state, decisions


# ------------------------------------------------------------------ the state machine


def test_every_state_action_pair_is_either_legal_or_refused_with_a_reason():
    pairs = {(s, a) for s in ReviewState for a in Action}
    assert set(TRANSITIONS) | set(REFUSALS) == pairs
    assert not set(TRANSITIONS) & set(REFUSALS)
    assert all(reason.strip() for reason in REFUSALS.values())


def _apply(state: ReviewState, action: Action):
    pol = policy("any", "office:Legal")
    if action is Action.withdraw:
        return withdraw(pol, state, ())
    return decide(
        pol,
        state,
        (),
        person="bob",
        verdict=action.value,
        at=at(5),
        comment="why not",
        person_offices_as_approver={"Legal"},
        author="alice",
        submitter="sam",
    )


@pytest.mark.parametrize(
    ("state", "action", "expected"),
    [
        (ReviewState.open, Action.approve, ReviewState.approved),
        (ReviewState.open, Action.reject, ReviewState.rejected),
        (ReviewState.open, Action.withdraw, ReviewState.withdrawn),
        (ReviewState.approved, Action.approve, "already approved"),
        (ReviewState.approved, Action.reject, "already approved"),
        (ReviewState.approved, Action.withdraw, "already approved"),
        (ReviewState.rejected, Action.approve, "already rejected"),
        (ReviewState.rejected, Action.reject, "already rejected"),
        (ReviewState.rejected, Action.withdraw, "already rejected"),
        (ReviewState.withdrawn, Action.approve, "withdrawn"),
        (ReviewState.withdrawn, Action.reject, "withdrawn"),
        (ReviewState.withdrawn, Action.withdraw, "already withdrawn"),
    ],
)
def test_each_state_action_pair(state, action, expected):
    if isinstance(expected, ReviewState):
        assert _apply(state, action).state is expected
    else:
        with pytest.raises(Conflict, match=expected) as refused:
            _apply(state, action)
        assert refused.value.detail == REFUSALS[(state, action)]


def test_a_decision_that_settles_nothing_leaves_the_review_open():
    step = decide(
        policy("all", "office:Legal", "office:Finance"),
        ReviewState.open,
        (),
        person="bob",
        verdict="approve",
        at=at(1),
        person_offices_as_approver={"Legal"},
        author="alice",
        submitter="sam",
    )
    assert step.state is ReviewState.open
    assert step.decision == Decision(Party("office", "Legal"), "bob", Verdict.approve, at(1))
    assert step.decisions == (step.decision,)


def test_withdrawing_keeps_the_decisions_on_record():
    pol = policy("all", "office:Legal", "office:Finance")
    _, decisions = run(pol, [("office:Legal", "approve")])
    step = withdraw(pol, ReviewState.open, decisions)
    assert (step.state, step.decisions, step.decision) == (ReviewState.withdrawn, decisions, None)


def test_two_approvers_at_the_same_instant_under_any_one_wins_the_other_is_told():
    pol = policy("any", "office:Legal", "office:Finance")
    common = dict(at=at(1), verdict="approve", author="alice", submitter="sam")
    first = decide(
        pol, ReviewState.open, (), person="bob", person_offices_as_approver={"Legal"}, **common
    )
    assert first.state is ReviewState.approved
    with pytest.raises(Conflict, match="already approved"):
        decide(
            pol,
            first.state,
            first.decisions,
            person="fay",
            person_offices_as_approver={"Finance"},
            **common,
        )


@pytest.mark.parametrize("comment", ["", "   "])
def test_a_rejection_needs_a_comment(comment):
    with pytest.raises(Invalid, match="rejection needs a comment"):
        decide(
            policy("all", "office:Legal"),
            ReviewState.open,
            (),
            person="bob",
            verdict="reject",
            at=at(1),
            comment=comment,
            person_offices_as_approver={"Legal"},
            author="alice",
            submitter="sam",
        )


def test_an_unknown_verdict_is_invalid():
    with pytest.raises(Invalid, match="approves or rejects"):
        decide(
            policy("all", "office:Legal"),
            ReviewState.open,
            (),
            person="bob",
            verdict="maybe",
            at=at(1),
            person_offices_as_approver={"Legal"},
            author="alice",
            submitter="sam",
        )


# ------------------------------------------------------------------ policy arithmetic


@pytest.mark.parametrize(
    ("spec", "n", "moves", "expected"),
    [
        # all: every party approves; one rejection ends it
        ("all", 3, [], ReviewState.open),
        ("all", 3, [(1, "approve"), (2, "approve")], ReviewState.open),
        ("all", 3, [(3, "approve"), (1, "approve"), (2, "approve")], ReviewState.approved),
        ("all", 3, [(1, "approve"), (2, "reject")], ReviewState.rejected),
        ("all", 1, [(1, "approve")], ReviewState.approved),
        # any: one approval is enough; only every party rejecting ends it
        ("any", 3, [(2, "approve")], ReviewState.approved),
        ("any", 3, [(1, "reject"), (2, "reject")], ReviewState.open),
        ("any", 3, [(1, "reject"), (2, "reject"), (3, "approve")], ReviewState.approved),
        ("any", 3, [(1, "reject"), (2, "reject"), (3, "reject")], ReviewState.rejected),
        # sequential: every party, in order; any rejection ends it
        ("sequential", 3, [(1, "approve"), (2, "approve")], ReviewState.open),
        ("sequential", 3, [(1, "approve"), (2, "approve"), (3, "approve")], ReviewState.approved),
        ("sequential", 3, [(1, "reject")], ReviewState.rejected),
        ("sequential", 3, [(1, "approve"), (2, "reject")], ReviewState.rejected),
        # quorum
        ("quorum:2", 3, [(1, "approve"), (3, "approve")], ReviewState.approved),
        ("quorum:2", 3, [(1, "reject"), (3, "approve")], ReviewState.open),
        ("quorum:2", 3, [(1, "reject"), (3, "reject")], ReviewState.rejected),
    ],
)
def test_each_mode_settles_by_its_arithmetic(spec, n, moves, expected):
    pol = policy(spec, *offices(n))
    state, decisions = run(pol, [(f"office:O{i}", verdict) for i, verdict in moves])
    assert state is expected
    assert evaluate(pol, decisions).state is expected


@pytest.mark.parametrize(("k", "n"), QUORUMS)
def test_quorum_needs_exactly_k_approvals(k, n):
    pol = policy(f"quorum:{k}", *offices(n))
    approvals = [(f"office:O{i}", "approve") for i in range(1, k + 1)]
    assert run(pol, approvals[:-1])[0] is ReviewState.open
    state, decisions = run(pol, approvals)
    assert state is ReviewState.approved
    outcome = evaluate(pol, decisions)
    assert (outcome.needed, len(outcome.approved_by)) == (k, k)


@pytest.mark.parametrize(("k", "n"), QUORUMS)
def test_quorum_is_rejected_once_k_approvals_are_out_of_reach(k, n):
    pol = policy(f"quorum:{k}", *offices(n))
    rejections = [(f"office:O{i}", "reject") for i in range(1, n - k + 2)]
    assert run(pol, rejections[:-1])[0] is ReviewState.open
    state, decisions = run(pol, rejections)
    assert state is ReviewState.rejected
    assert len(evaluate(pol, decisions).rejected_by) == n - k + 1


def test_a_partys_first_decision_counts_and_later_ones_are_ignored():
    legal, finance = Party("office", "Legal"), Party("office", "Finance")
    pol = Policy((legal, finance), Mode.all)
    decisions = [
        Decision(legal, "bob", Verdict.approve, at(1)),
        Decision(legal, "ben", Verdict.reject, at(2), "second thoughts"),
        Decision(finance, "fay", Verdict.approve, at(3)),
    ]
    outcome = evaluate(pol, decisions)
    assert outcome.state is ReviewState.approved
    assert outcome.approved_by == (legal, finance)
    assert outcome.rejected_by == ()


def test_decisions_that_could_not_have_been_taken_do_not_count():
    legal, finance = Party("office", "Legal"), Party("office", "Finance")
    stranger = Party("office", "Elsewhere")
    seq = Policy((legal, finance), Mode.sequential)
    out_of_turn = [Decision(finance, "fay", Verdict.approve, at(1))]
    assert evaluate(seq, out_of_turn).approved_by == ()
    unknown = [Decision(stranger, "zed", Verdict.reject, at(1), "no")]
    assert evaluate(seq, unknown).state is ReviewState.open
    after_settled = [
        Decision(legal, "bob", Verdict.approve, at(1)),
        Decision(finance, "fay", Verdict.reject, at(2), "no"),
    ]
    any_ = Policy((legal, finance), Mode.any)
    assert evaluate(any_, after_settled).rejected_by == ()


def test_sequential_refuses_out_of_turn_and_then_lets_the_next_party_decide():
    pol = policy("sequential", "office:Legal", "office:Finance", "person:carol")
    with pytest.raises(Forbidden, match="not your turn yet: waiting for office:Legal first"):
        may_decide(
            pol,
            (),
            person="fay",
            person_offices_as_approver={"Finance"},
            author="alice",
            submitter="sam",
        )
    with pytest.raises(Forbidden, match="waiting for office:Legal first"):
        may_decide(
            pol, (), person="carol", person_offices_as_approver=set(), author=None, submitter="sam"
        )
    _, decisions = run(pol, [("office:Legal", "approve")])
    chosen = may_decide(
        pol,
        decisions,
        person="fay",
        person_offices_as_approver={"Finance"},
        author="alice",
        submitter="sam",
    )
    assert chosen == Party("office", "Finance")


# ------------------------------------------------------------------ who may decide


def _may(pol: Policy, decisions=(), **overrides):
    args = dict(
        person="bob",
        person_offices_as_approver={"Legal"},
        author="alice",
        submitter="sam",
        version=3,
    )
    args.update(overrides)
    return may_decide(pol, decisions, **args)


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"person_offices_as_approver": {"Canteen"}}, "not an approver of any office"),
        ({"person_offices_as_approver": set()}, r"required: office:Legal, office:Finance\)"),
        ({"author": "bob"}, "attributed author of version 3: someone else must decide"),
        ({"submitter": "bob"}, "you submitted version 3 for review: someone else must decide"),
        ({"author": "bob", "version": None}, "author of the version under review"),
    ],
)
def test_who_may_not_decide_is_told_why(overrides, says):
    with pytest.raises(Forbidden, match=says):
        _may(policy("all", "office:Legal", "office:Finance"), **overrides)


@pytest.mark.parametrize("overrides", [{"author": "bob"}, {"submitter": "bob"}])
def test_a_relaxed_policy_lets_the_author_or_submitter_decide(overrides):
    relaxed = policy("all", "office:Legal", "office:Finance", sod=False)
    assert _may(relaxed, **overrides) == Party("office", "Legal")


def test_a_named_person_decides_for_themself_and_an_unknown_author_is_no_obstacle():
    pol = policy("all", "office:Legal", "person:carol")
    assert _may(pol, person="carol", person_offices_as_approver=set(), author=None) == Party(
        "person", "carol"
    )


def test_separation_of_duties_binds_a_named_person_too():
    pol = policy("all", "person:carol")
    with pytest.raises(Forbidden, match="you submitted"):
        _may(pol, person="carol", person_offices_as_approver=set(), submitter="carol")


def test_a_party_that_has_decided_cannot_decide_again():
    pol = policy("all", "office:Legal", "office:Finance")
    _, decisions = run(pol, [("office:Legal", "approve")])  # by approver0
    with pytest.raises(Conflict, match="office:Legal has already decided: approver0 approved"):
        _may(pol, decisions, person="ben")
    with pytest.raises(Conflict, match="you have already decided"):
        _may(pol, decisions, person="approver0")


def test_a_rejecting_party_is_named_as_having_rejected():
    pol = policy("any", "office:Legal", "office:Finance")
    _, decisions = run(pol, [("office:Legal", "reject")])  # by approver0
    with pytest.raises(Conflict, match="office:Legal has already decided: approver0 rejected"):
        _may(pol, decisions, person="ben")
    with pytest.raises(Conflict, match=r"already decided on this review \(rejected for office"):
        _may(pol, decisions, person="approver0")


def test_one_person_decides_once_even_for_two_of_their_offices():
    pol = policy("all", "office:Legal", "office:Finance")
    both = {"Legal", "Finance"}
    assert _may(pol, person_offices_as_approver=both) == Party("office", "Legal")
    step = decide(
        pol,
        ReviewState.open,
        (),
        person="bob",
        verdict="approve",
        at=at(1),
        person_offices_as_approver=both,
        author="alice",
        submitter="sam",
    )
    with pytest.raises(Conflict, match="a person decides once"):
        _may(pol, step.decisions, person_offices_as_approver=both)


# ------------------------------------------------------------------ whose move it is


@pytest.mark.parametrize(
    ("spec", "moves", "awaited"),
    [
        ("all", [], ["office:Legal", "office:Finance", "person:carol"]),
        ("all", [("office:Finance", "approve")], ["office:Legal", "person:carol"]),
        ("any", [], ["office:Legal", "office:Finance", "person:carol"]),
        ("any", [("office:Legal", "reject")], ["office:Finance", "person:carol"]),
        ("quorum:2", [("person:carol", "approve")], ["office:Legal", "office:Finance"]),
        ("quorum:2", [("office:Legal", "reject")], ["office:Finance", "person:carol"]),
        ("sequential", [], ["office:Legal"]),
        ("sequential", [("office:Legal", "approve")], ["office:Finance"]),
        (
            "sequential",
            [("office:Legal", "approve"), ("office:Finance", "approve")],
            ["person:carol"],
        ),
        # a settled review awaits nobody
        ("any", [("office:Legal", "approve")], []),
        ("all", [("office:Legal", "reject")], []),
        ("quorum:2", [("office:Legal", "reject"), ("person:carol", "reject")], []),
    ],
)
def test_awaiting_per_mode(spec, moves, awaited):
    pol = policy(spec, "office:Legal", "office:Finance", "person:carol")
    _, decisions = run(pol, moves)
    found = awaiting(pol, decisions, submitted_at=T0, now=T0, parents=PARENTS)
    assert [a.party for a in found] == awaited
    assert {(a.action, a.due) for a in found} <= {("decide", DUE)}


@pytest.mark.parametrize(
    ("spec", "first"), [("all", "approve"), ("any", "reject"), ("quorum:2", "approve")]
)
def test_in_parallel_modes_the_move_is_everyones_since_submission(spec, first):
    pol = policy(spec, "office:Legal", "office:Finance", "person:carol")
    _, decisions = run(pol, [("office:Legal", first)])
    assert len(decisions) == 1
    found = awaiting(pol, decisions, submitted_at=T0, now=at(60), parents={})
    assert {a.since for a in found} == {T0}


def test_in_sequence_the_move_passes_when_the_previous_party_approves():
    pol = policy("sequential", "office:Legal", "office:Finance", "person:carol")
    since = [awaiting(pol, (), submitted_at=T0, now=T0, parents={})[0].since]
    _, decisions = run(pol, [("office:Legal", "approve")])  # at at(10)
    since.append(awaiting(pol, decisions, submitted_at=T0, now=T0, parents={})[0].since)
    _, decisions = run(pol, [("office:Legal", "approve"), ("office:Finance", "approve")])
    since.append(awaiting(pol, decisions, submitted_at=T0, now=T0, parents={})[0].since)
    assert since == [T0, at(10), at(20)]


def test_no_due_date_never_escalates():
    pol = policy("all", "office:Legal", due=None)
    found = awaiting(pol, (), submitted_at=T0, now=T0 + timedelta(days=365), parents=PARENTS)
    assert [(a.party, a.due) for a in found] == [("office:Legal", None)]


# ------------------------------------------------------------------ escalation


@pytest.mark.parametrize(
    ("now", "joined"),
    [
        (T0, []),
        (DUE - timedelta(seconds=1), []),
        (DUE, []),  # due, not yet overdue
        (DUE + timedelta(seconds=1), ["office:Directorate", "office:Services"]),
        (DUE + timedelta(days=30), ["office:Directorate", "office:Services"]),
    ],
)
def test_the_parents_of_awaited_offices_join_once_overdue(now, joined):
    pol = policy("all", "office:Legal", "office:Finance", "office:IT", "office:Top", "person:carol")
    found = awaiting(pol, (), submitted_at=T0, now=now, parents=PARENTS)
    assert [a.party for a in found][:5] == [str(p) for p in pol.parties]
    extra = found[5:]
    assert [a.party for a in extra] == joined
    for a in extra:
        assert a.action == "decide (escalated: overdue since 2024-05-03 09:00 UTC)"
        assert (a.since, a.due) == (DUE, DUE)
    if joined:
        assert extra[0].escalated_for == ("office:Legal", "office:Finance")
        assert extra[1].escalated_for == ("office:IT",)


def test_a_parent_already_awaited_in_its_own_right_is_not_added_twice():
    pol = policy("all", "office:Legal", "office:Directorate")
    found = awaiting(pol, (), submitted_at=T0, now=DUE + timedelta(hours=1), parents=PARENTS)
    assert [a.party for a in found] == ["office:Legal", "office:Directorate"]


def test_escalations_are_reported_once_as_the_clock_moves():
    pol = policy("sequential", "office:Legal", "office:IT")
    recorded: set[str] = set()

    def newly(decisions, now):
        joined = escalations(
            pol, decisions, submitted_at=T0, now=now, parents=PARENTS, recorded=recorded
        )
        recorded.update(a.party for a in joined)
        return [a.party for a in joined]

    assert newly((), DUE) == []
    assert newly((), DUE + timedelta(minutes=1)) == ["office:Directorate"]
    assert newly((), DUE + timedelta(hours=5)) == []
    _, decisions = run(pol, [("office:Legal", "approve")])
    assert newly(decisions, DUE + timedelta(hours=6)) == ["office:Services"]
    assert newly(decisions, DUE + timedelta(days=9)) == []
    _, decisions = run(pol, [("office:Legal", "approve"), ("office:IT", "approve")])
    assert newly(decisions, DUE + timedelta(days=10)) == []


def test_once_overdue_an_approver_of_the_parent_office_may_decide_in_its_stead():
    pol = policy("sequential", "office:Legal", "office:Finance")
    director = dict(person="dora", person_offices_as_approver={"Directorate"}, parents=PARENTS)
    with pytest.raises(Forbidden, match="not an approver"):
        _may(pol, now=DUE, **director)
    assert _may(pol, now=DUE + timedelta(seconds=1), **director) == Party("office", "Legal")
    step = decide(
        pol,
        ReviewState.open,
        (),
        verdict="approve",
        at=DUE + timedelta(hours=1),
        author="alice",
        submitter="sam",
        **director,
    )
    assert step.decision.party == Party("office", "Legal")
    assert [
        a.party for a in awaiting(pol, step.decisions, submitted_at=T0, now=DUE, parents=PARENTS)
    ] == ["office:Finance"]


# ------------------------------------------------------------------ policies and modes


@pytest.mark.parametrize(
    ("text", "mode", "k"),
    [
        ("all", Mode.all, None),
        ("any", Mode.any, None),
        ("sequential", Mode.sequential, None),
        ("quorum:1", Mode.quorum, 1),
        ("quorum:3", Mode.quorum, 3),
        (" Quorum: 2 ", Mode.quorum, 2),
    ],
)
def test_modes_are_parsed(text, mode, k):
    assert parse_mode(text, party_count=3) == (mode, k)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("majority", "unknown approval mode 'majority'"),
        ("", "unknown approval mode"),
        ("quorum", "quorum needs a count"),
        ("quorum:", "needs a whole number"),
        ("quorum:two", "needs a whole number K, not 'two'"),
        ("quorum:0", "quorum:K needs 1 ≤ K ≤ number of parties"),
        ("quorum:-1", "quorum:K needs 1 ≤ K ≤ number of parties"),
        ("quorum:4", r"quorum:K needs 1 ≤ K ≤ number of parties \(K is 4, with 3 parties\)"),
        ("all:2", "the mode all takes no count"),
        ("sequential:1", "the mode sequential takes no count"),
    ],
)
def test_bad_modes_are_refused(text, says):
    with pytest.raises(Invalid, match=says):
        parse_mode(text, party_count=3)


@pytest.mark.parametrize(
    ("parties", "spec", "due", "says"),
    [
        ([], "all", None, "at least one office or person"),
        (["office:Legal", "office:Legal"], "all", None, "office:Legal is named twice"),
        (["person:carol", " person:carol"], "any", None, "person:carol is named twice"),
        (["office:Legal"], "quorum:2", None, "quorum:K needs 1 ≤ K ≤ number of parties"),
        (["Legal"], "all", None, "write office:NAME or person:USERNAME"),
        (["team:Legal"], "all", None, "an office or a person, not 'team'"),
        (["office:"], "all", None, "a party needs a name"),
        (["office:Legal"], "all", datetime(2024, 5, 3), "needs a time zone"),
    ],
)
def test_bad_policies_are_refused(parties, spec, due, says):
    with pytest.raises(Invalid, match=says):
        make_policy(parties, spec, due=due)


@pytest.mark.parametrize(
    ("mode", "quorum", "says"),
    [
        (Mode.quorum, None, "quorum needs a count"),
        (Mode.quorum, 3, "quorum:K needs 1 ≤ K"),
        (Mode.all, 1, "takes no count"),
        ("unanimous", None, "unknown approval mode"),
    ],
)
def test_a_policy_built_directly_is_checked_too(mode, quorum, says):
    with pytest.raises(Invalid, match=says):
        Policy((Party("office", "A"), Party("office", "B")), mode, quorum)


def test_a_policy_says_its_mode_as_written():
    assert policy("quorum:2", *offices(3)).mode_spec == "quorum:2"
    assert policy("sequential", *offices(3)).mode_spec == "sequential"
    assert str(Party.parse("office:Legal")) == "office:Legal"


# ------------------------------------------------------------------ the document's state


@pytest.mark.parametrize(
    ("latest", "approved_before", "state"),
    [
        (None, False, "draft"),
        (ReviewState.open, False, "in_review"),
        (ReviewState.open, True, "in_review"),
        (ReviewState.approved, False, "approved"),
        (ReviewState.approved, True, "approved"),
        (ReviewState.rejected, False, "rejected"),
        (ReviewState.rejected, True, "rejected"),
        (ReviewState.withdrawn, False, "draft"),
        (ReviewState.withdrawn, True, "approved"),
    ],
)
def test_document_state(latest, approved_before, state):
    assert document_state(latest, approved_before) == state
