"""The approval rules: policies, the review state machine, whose move it is.

Pure functions over immutable data. The server loads a review's rows into these types,
asks what an action does, and persists the answer; the offline verifier replays recorded
decisions through the very same functions.

A policy names *parties* (offices or named persons) and a mode. Each party decides at
most once, through one person; a person decides at most once per review. The mode says
how many approving parties are needed (``all``: every one, ``any``: one, ``quorum:K``:
K, ``sequential``: every one, in the order given), and a review is rejected as soon as
that number can no longer be reached.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from core.errors import Conflict, Forbidden, Invalid

__all__ = [
    "REFUSALS",
    "TRANSITIONS",
    "Action",
    "Awaited",
    "Decision",
    "Mode",
    "Outcome",
    "Party",
    "PartyKind",
    "Policy",
    "ReviewState",
    "Step",
    "Verdict",
    "awaiting",
    "check_transition",
    "decide",
    "document_state",
    "escalations",
    "evaluate",
    "make_policy",
    "may_decide",
    "parse_mode",
    "withdraw",
]


# ------------------------------------------------------------------ vocabulary


class Mode(StrEnum):
    """How a policy counts its parties' approvals."""

    all = "all"
    any = "any"
    quorum = "quorum"
    sequential = "sequential"


class PartyKind(StrEnum):
    """What a party of a policy is: an office (any of its approvers) or one person."""

    office = "office"
    person = "person"


class ReviewState(StrEnum):
    """Where one review stands."""

    open = "open"
    approved = "approved"
    rejected = "rejected"
    withdrawn = "withdrawn"


class Action(StrEnum):
    """What someone can do to a review."""

    approve = "approve"
    reject = "reject"
    withdraw = "withdraw"


class Verdict(StrEnum):
    """What a decision says."""

    approve = "approve"
    reject = "reject"


@dataclass(frozen=True, slots=True)
class Party:
    """One office or one named person whose decision a policy requires."""

    kind: PartyKind
    name: str

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", PartyKind(self.kind))
        except ValueError:
            raise Invalid(f"a party is an office or a person, not {self.kind!r}") from None
        if not isinstance(self.name, str) or not self.name.strip():
            raise Invalid("a party needs a name")

    @classmethod
    def parse(cls, text: str) -> Party:
        """``office:NAME`` or ``person:USERNAME`` as a party."""
        kind, sep, name = text.partition(":")
        if not sep:
            raise Invalid(f"{text!r} names no party: write office:NAME or person:USERNAME")
        return cls(kind.strip().lower(), name.strip())  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


# ------------------------------------------------------------------ policies


def parse_mode(text: str, *, party_count: int | None = None) -> tuple[Mode, int | None]:
    """``all``, ``any``, ``sequential`` or ``quorum:K`` as a mode and its count K."""
    word, sep, count = str(text).strip().lower().partition(":")
    try:
        mode = Mode(word)
    except ValueError:
        raise Invalid(
            f"unknown approval mode {text!r}: use all, any, quorum:K or sequential"
        ) from None
    if mode is not Mode.quorum:
        if sep:
            raise Invalid(f"the mode {mode} takes no count; only quorum:K does")
        return mode, None
    if not sep:
        raise Invalid("quorum needs a count: write quorum:K")
    try:
        k = int(count.strip())
    except ValueError:
        raise Invalid(f"quorum:K needs a whole number K, not {count.strip()!r}") from None
    _check_quorum(k, party_count)
    return mode, k


def _check_quorum(k: int, party_count: int | None) -> None:
    if k < 1 or (party_count is not None and k > party_count):
        bound = "number of parties" if party_count is None else f"{party_count} parties"
        raise Invalid(f"quorum:K needs 1 ≤ K ≤ number of parties (K is {k}, with {bound})")


@dataclass(frozen=True, slots=True)
class Policy:
    """Who must decide, how their decisions count, and by when: the same rule for all."""

    parties: tuple[Party, ...]
    mode: Mode
    quorum: int | None = None
    due: datetime | None = None
    separation_of_duties: bool = True

    def __post_init__(self) -> None:
        parties = tuple(self.parties)
        object.__setattr__(self, "parties", parties)
        try:
            object.__setattr__(self, "mode", Mode(self.mode))
        except ValueError:
            raise Invalid(
                f"unknown approval mode {self.mode!r}: use all, any, quorum:K or sequential"
            ) from None
        if not parties:
            raise Invalid("a policy needs at least one office or person to decide")
        seen: set[Party] = set()
        for party in parties:
            if party in seen:
                raise Invalid(f"{party} is named twice; each party decides once")
            seen.add(party)
        if self.mode is Mode.quorum:
            if self.quorum is None:
                raise Invalid("quorum needs a count: write quorum:K")
            _check_quorum(self.quorum, len(parties))
        elif self.quorum is not None:
            raise Invalid(f"the mode {self.mode} takes no count; only quorum:K does")
        if self.due is not None and self.due.tzinfo is None:
            raise Invalid("a due date needs a time zone")

    @property
    def mode_spec(self) -> str:
        """The mode as written: ``all``, ``any``, ``sequential`` or ``quorum:K``."""
        return f"quorum:{self.quorum}" if self.mode is Mode.quorum else str(self.mode)

    @property
    def needed(self) -> int:
        """How many parties must approve."""
        return _NEEDED[self.mode](self)


_NEEDED: dict[Mode, Callable[[Policy], int]] = {
    Mode.all: lambda policy: len(policy.parties),
    Mode.any: lambda policy: 1,
    Mode.quorum: lambda policy: policy.quorum or 0,
    Mode.sequential: lambda policy: len(policy.parties),
}


def make_policy(
    parties: Iterable[Party | str],
    mode: str = "all",
    *,
    due: datetime | None = None,
    separation_of_duties: bool = True,
) -> Policy:
    """A policy from parties (``office:NAME``, ``person:USERNAME``) and a mode as written."""
    parsed = tuple(p if isinstance(p, Party) else Party.parse(p) for p in parties)
    if not parsed:
        raise Invalid("a policy needs at least one office or person to decide")
    kind, k = parse_mode(mode, party_count=len(parsed))
    return Policy(parsed, kind, k, due, separation_of_duties)


# ------------------------------------------------------------------ decisions and outcome


@dataclass(frozen=True, slots=True)
class Decision:
    """One person's verdict, counted for one party of the policy."""

    party: Party
    person: str
    verdict: Verdict
    at: datetime
    comment: str = ""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "verdict", Verdict(self.verdict))
        except ValueError:
            raise Invalid(f"a decision approves or rejects, not {self.verdict!r}") from None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the decisions so far add up to under a policy."""

    state: ReviewState
    needed: int
    approved_by: tuple[Party, ...]
    rejected_by: tuple[Party, ...]


def evaluate(policy: Policy, decisions: Iterable[Decision]) -> Outcome:
    """Approved, rejected or still open: the policy's arithmetic over the decisions in order.

    Only decisions that could have been taken count: a party's first, for a party the
    policy names, in turn (``sequential``), and none after the outcome was settled.
    """
    needed = policy.needed
    total = len(policy.parties)
    approved: list[Party] = []
    rejected: list[Party] = []
    state = ReviewState.open
    for decision in _counted(policy, decisions):
        (approved if decision.verdict is Verdict.approve else rejected).append(decision.party)
        if len(approved) >= needed:
            state = ReviewState.approved
        elif total - len(rejected) < needed:
            state = ReviewState.rejected
        if state is not ReviewState.open:
            break
    return Outcome(state, needed, tuple(approved), tuple(rejected))


def _counted(policy: Policy, decisions: Iterable[Decision]) -> Iterable[Decision]:
    decided: set[Party] = set()
    for decision in decisions:
        # Whose move it is excludes parties that decided and parties the policy does not name.
        if decision.party not in _in_turn(policy, decided):
            continue
        decided.add(decision.party)
        yield decision


def _in_turn(policy: Policy, decided: Collection[Party]) -> tuple[Party, ...]:
    undecided = tuple(p for p in policy.parties if p not in decided)
    return _TURN[policy.mode](undecided)


# Whose move it is, given the parties that have not decided yet (in policy order).
_TURN: dict[Mode, Callable[[tuple[Party, ...]], tuple[Party, ...]]] = {
    Mode.all: lambda undecided: undecided,
    Mode.any: lambda undecided: undecided,
    Mode.quorum: lambda undecided: undecided,
    Mode.sequential: lambda undecided: undecided[:1],
}


# ------------------------------------------------------------------ ball in court


@dataclass(frozen=True, slots=True)
class Awaited:
    """One party whose move it is: who, to do what, since when, by when."""

    party: str
    action: str
    since: datetime
    due: datetime | None
    escalated_for: tuple[str, ...] = field(default=())


def awaiting(
    policy: Policy,
    decisions: Iterable[Decision],
    *,
    submitted_at: datetime,
    now: datetime,
    parents: Mapping[str, str | None],
) -> list[Awaited]:
    """Whose move it is on an open review, parents of overdue offices included.

    The caller asks only about open reviews; decisions that settle the review leave
    nobody awaited.
    """
    in_turn, since = _whose_move(policy, tuple(decisions), submitted_at)
    direct = [Awaited(str(party), "decide", since, policy.due) for party in in_turn]
    return direct + _escalated(policy, in_turn, now=now, parents=parents)


def escalations(
    policy: Policy,
    decisions: Iterable[Decision],
    *,
    submitted_at: datetime,
    now: datetime,
    parents: Mapping[str, str | None],
    recorded: Collection[str] = (),
) -> list[Awaited]:
    """Parent offices that join ``awaiting`` by escalation and are not in ``recorded`` yet."""
    in_turn, _ = _whose_move(policy, tuple(decisions), submitted_at)
    joined = _escalated(policy, in_turn, now=now, parents=parents)
    return [a for a in joined if a.party not in recorded]


def _whose_move(
    policy: Policy, decisions: tuple[Decision, ...], submitted_at: datetime
) -> tuple[tuple[Party, ...], datetime]:
    if evaluate(policy, decisions).state is not ReviewState.open:
        return (), submitted_at
    counted = list(_counted(policy, decisions))
    in_turn = _in_turn(policy, {d.party for d in counted})
    # Under ``sequential`` the move passed to the next party when the previous approved.
    since = counted[-1].at if policy.mode is Mode.sequential and counted else submitted_at
    return in_turn, since


def _escalated(
    policy: Policy,
    in_turn: tuple[Party, ...],
    *,
    now: datetime,
    parents: Mapping[str, str | None],
) -> list[Awaited]:
    due = policy.due
    if due is None or not now > due:
        return []
    overdue_for: dict[Party, list[str]] = {}
    for party in in_turn:
        parent = parents.get(party.name) if party.kind is PartyKind.office else None
        if parent is None or Party(PartyKind.office, parent) in in_turn:
            continue  # an office already awaited in its own right is not added twice
        overdue_for.setdefault(Party(PartyKind.office, parent), []).append(str(party))
    action = f"decide (escalated: overdue since {_human_time(due)})"
    return [Awaited(str(p), action, due, due, tuple(f)) for p, f in overdue_for.items()]


def _human_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


# ------------------------------------------------------------------ who may decide


def may_decide(
    policy: Policy,
    decisions: Iterable[Decision],
    *,
    person: str,
    person_offices_as_approver: Collection[str],
    author: str | None,
    submitter: str,
    version: int | None = None,
    now: datetime | None = None,
    parents: Mapping[str, str | None] | None = None,
) -> Party:
    """The party this person decides for now, or why they may not decide.

    An approver of an office named by the policy, or a person it names, decides for
    that party. Once the review is overdue (``now`` past the due date, with ``parents``
    given), an approver of an awaited office's parent office may decide in its stead.
    """
    decisions = tuple(decisions)
    named = [
        p
        for p in policy.parties
        if (p.kind is PartyKind.office and p.name in person_offices_as_approver)
        or (p.kind is PartyKind.person and p.name == person)
    ]
    counted = list(_counted(policy, decisions))
    decided = {d.party: d for d in counted}
    in_turn = _in_turn(policy, decided)
    stand_in = _stand_in_parties(
        policy, in_turn, person_offices_as_approver, now=now, parents=parents or {}
    )
    eligible = named + [p for p in stand_in if p not in named]
    if not eligible:
        required = ", ".join(str(p) for p in policy.parties)
        raise Forbidden(
            f"you are not an approver of any office this review requires, nor named on it "
            f"(required: {required})"
        )
    if policy.separation_of_duties:
        _check_separation(person, author=author, submitter=submitter, version=version)
    own = next((d for d in counted if d.person == person), None)
    if own is not None:
        raise Conflict(
            f"you have already decided on this review ({_PAST[own.verdict]} for {own.party} "
            f"at {_human_time(own.at)}); a person decides once"
        )
    open_parties = [p for p in eligible if p not in decided]
    if not open_parties:
        party = eligible[0]
        earlier = decided[party]
        raise Conflict(
            f"{party} has already decided: {earlier.person} {_PAST[earlier.verdict]} "
            f"at {_human_time(earlier.at)}"
        )
    for party in open_parties:
        if party in in_turn:
            return party
    waiting = ", ".join(str(p) for p in in_turn)
    raise Forbidden(f"it is not your turn yet: waiting for {waiting} first")


_PAST = {Verdict.approve: "approved", Verdict.reject: "rejected"}


def _stand_in_parties(
    policy: Policy,
    in_turn: tuple[Party, ...],
    offices: Collection[str],
    *,
    now: datetime | None,
    parents: Mapping[str, str | None],
) -> list[Party]:
    if now is None or policy.due is None or not now > policy.due:
        return []
    return [p for p in in_turn if p.kind is PartyKind.office and parents.get(p.name) in offices]


def _check_separation(
    person: str, *, author: str | None, submitter: str, version: int | None
) -> None:
    which = "the version under review" if version is None else f"version {version}"
    if author is not None and person == author:
        raise Forbidden(f"you are the attributed author of {which}: someone else must decide")
    if person == submitter:
        raise Forbidden(f"you submitted {which} for review: someone else must decide")


# ------------------------------------------------------------------ the state machine

# Given the policy and the decisions once the action is recorded, the review's next state.
Rule = Callable[[Policy, tuple[Decision, ...]], ReviewState]


def _count_decisions(policy: Policy, decisions: tuple[Decision, ...]) -> ReviewState:
    return evaluate(policy, decisions).state


def _close_withdrawn(policy: Policy, decisions: tuple[Decision, ...]) -> ReviewState:
    return ReviewState.withdrawn


TRANSITIONS: dict[tuple[ReviewState, Action], Rule] = {
    (ReviewState.open, Action.approve): _count_decisions,
    (ReviewState.open, Action.reject): _count_decisions,
    (ReviewState.open, Action.withdraw): _close_withdrawn,
}

_NEW_REVIEW = "submit the version again, or a new one, for a new review"

REFUSALS: dict[tuple[ReviewState, Action], str] = {
    (ReviewState.approved, Action.approve): (
        f"the review was already approved; nothing is left to decide ({_NEW_REVIEW})"
    ),
    (ReviewState.approved, Action.reject): (
        "the review was already approved and an approval is not undone; "
        "submit a new version for a new review"
    ),
    (ReviewState.approved, Action.withdraw): (
        "the review was already approved, so there is nothing open to withdraw"
    ),
    (ReviewState.rejected, Action.approve): (f"the review was already rejected; {_NEW_REVIEW}"),
    (ReviewState.rejected, Action.reject): (
        f"the review was already rejected; nothing is left to decide ({_NEW_REVIEW})"
    ),
    (ReviewState.rejected, Action.withdraw): (
        "the review was already rejected, so there is nothing open to withdraw"
    ),
    (ReviewState.withdrawn, Action.approve): (
        f"the review was withdrawn by its owner; {_NEW_REVIEW}"
    ),
    (ReviewState.withdrawn, Action.reject): (
        f"the review was withdrawn by its owner; {_NEW_REVIEW}"
    ),
    (ReviewState.withdrawn, Action.withdraw): "the review was already withdrawn",
}


def check_transition(state: ReviewState, action: Action) -> Rule:
    """The rule for ``action`` on a review in ``state``, or Conflict saying why it is illegal."""
    rule = TRANSITIONS.get((ReviewState(state), Action(action)))
    if rule is None:
        raise Conflict(REFUSALS[(ReviewState(state), Action(action))])
    return rule


@dataclass(frozen=True, slots=True)
class Step:
    """A review after one action: its state, its decisions, and the decision just taken."""

    state: ReviewState
    decisions: tuple[Decision, ...]
    decision: Decision | None


def decide(
    policy: Policy,
    state: ReviewState,
    decisions: Iterable[Decision],
    *,
    person: str,
    verdict: Verdict | str,
    at: datetime,
    comment: str = "",
    person_offices_as_approver: Collection[str],
    author: str | None,
    submitter: str,
    version: int | None = None,
    parents: Mapping[str, str | None] | None = None,
) -> Step:
    """Record one person's approval or rejection and settle the review if it now can be.

    ``at`` is also the clock for escalation: with ``parents`` given, an overdue office's
    parent may decide in its stead.
    """
    try:
        verdict = Verdict(verdict)
    except ValueError:
        raise Invalid(f"a decision approves or rejects, not {verdict!r}") from None
    rule = check_transition(state, Action(verdict.value))
    decisions = tuple(decisions)
    party = may_decide(
        policy,
        decisions,
        person=person,
        person_offices_as_approver=person_offices_as_approver,
        author=author,
        submitter=submitter,
        version=version,
        now=at,
        parents=parents,
    )
    comment = comment.strip()
    if verdict is Verdict.reject and not comment:
        raise Invalid("a rejection needs a comment that says why")
    decision = Decision(party, person, verdict, at, comment)
    after = (*decisions, decision)
    return Step(rule(policy, after), after, decision)


def withdraw(policy: Policy, state: ReviewState, decisions: Iterable[Decision]) -> Step:
    """Close an open review without a verdict; its decisions stay on record."""
    rule = check_transition(state, Action.withdraw)
    decisions = tuple(decisions)
    return Step(rule(policy, decisions), decisions, None)


# ------------------------------------------------------------------ the document's state

_DOCUMENT_STATE: dict[ReviewState | None, str] = {
    None: "draft",
    ReviewState.open: "in_review",
    ReviewState.approved: "approved",
    ReviewState.rejected: "rejected",
}


def document_state(latest_review_state: ReviewState | None, any_approved_before: bool) -> str:
    """``draft``, ``in_review``, ``approved`` or ``rejected``, from the document's reviews.

    A withdrawn review leaves the document where it stood: approved if an earlier review
    approved a version, a draft otherwise.
    """
    if latest_review_state is ReviewState.withdrawn:
        return "approved" if any_approved_before else "draft"
    key = None if latest_review_state is None else ReviewState(latest_review_state)
    return _DOCUMENT_STATE[key]
