"""The capture role's rule for which capture process answers a camera added over the bus."""

from __future__ import annotations

import itertools

import pytest

from livecam.publisher import chosen
from livecam.wire import host_of

SITE = ["cams1:40", "cams1:7", "cams2:12"]


def answers(
    named: str | None, warm: bool = True, heard: dict[str, list[str]] | None = None
) -> dict[str, list[str]]:
    """Who answers a request naming ``named``, each process hearing ``heard[it]`` (default:
    every other one), and with what candidates."""
    answered = {}
    for me in SITE:
        others = heard.get(me, []) if heard is not None else [o for o in SITE if o != me]
        candidates = chosen(me, others, named, warm)
        if candidates is not None:
            answered[me] = candidates
    return answered


def test_the_process_named_answers_alone() -> None:
    assert answers("cams2:12") == {"cams2:12": ["cams2:12"]}
    assert answers("cams2") == {"cams2:12": ["cams2:12"]}  # its host, where it runs alone
    # Named by its full name, it answers at once, before it has heard the others.
    assert answers("cams1:7", warm=False) == {"cams1:7": ["cams1:7"]}


def test_a_name_that_matches_several_or_none_is_answered_once_or_not_at_all() -> None:
    # Two processes on cams1: the lowest name answers that one must be named.
    assert answers("cams1") == {"cams1:40": ["cams1:40", "cams1:7"]}
    assert answers(None) == {"cams1:40": SITE}
    assert answers("cams3") == {}  # nobody: the web worker answers 503 (or 400 if it knows)


def test_the_only_process_alive_answers_an_unnamed_request_once_it_has_listened() -> None:
    assert chosen("cams2:12", [], None, warm=True) == ["cams2:12"]
    assert chosen("cams2:12", [], None, warm=False) is None  # it may not have heard the others yet


@pytest.mark.parametrize("named", [None, "cams1", "cams2", "cams1:40", "cams1:7", "nobody"])
def test_at_most_one_adds_while_each_hears_those_named_lower(named: str | None) -> None:
    """Whatever else each process has missed (one just started, one cut off), two never add
    a camera for one request as long as each hears the processes whose names sort before its
    own: the lower of two answerers would be the higher one's candidate."""
    pairs = list(itertools.permutations(SITE, 2))
    for n in range(len(pairs) + 1):
        for heard_pairs in itertools.combinations(pairs, n):
            heard = {me: [b for a, b in heard_pairs if a == me] for me in SITE}
            if not all({o for o in SITE if o < me} <= set(heard[me]) for me in SITE):
                continue
            adders = [me for me, candidates in answers(named, heard=heard).items() if candidates == [me]]
            assert len(adders) <= 1, (named, heard)


def test_one_that_has_not_heard_a_lower_one_would_answer_too() -> None:
    """Why a process answers for the site only once it has listened WARM_UP seconds: before
    it has heard the others, it would think itself alone."""
    assert answers(None, heard={"cams1:40": [], "cams1:7": ["cams1:40"], "cams2:12": []}) == {
        "cams1:40": ["cams1:40"],
        "cams2:12": ["cams2:12"],
    }


def test_an_owner_names_its_host() -> None:
    assert host_of("cams1.example.org:123") == "cams1.example.org"
    assert host_of("cams1") == "cams1"
