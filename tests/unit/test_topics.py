"""Agent topic scheme: build, parse, validation."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.topics import Kind, TopicError, agent_filter, build_topic, parse_topic, topic_matches


def test_build_results_topic_with_pipeline():
    assert build_topic("s1", "line3", "gw1", "results", "vib") == "factory/s1/line3/gw1/results/vib"


def test_status_topic_without_pipeline_and_custom_root():
    assert build_topic("s1", "l", "a", Kind.STATUS, root="acme") == "acme/s1/l/a/status"


@pytest.mark.parametrize("bad", ["", "a/b", "a+", "#", "x\x00"])
def test_illegal_segments_are_refused(bad):
    with pytest.raises(TopicError):
        build_topic("s", bad, "a", "results")


def test_unknown_kind_is_refused():
    with pytest.raises(TopicError, match="kind"):
        build_topic("s", "l", "a", "metrics")


@pytest.mark.parametrize(
    "bad", ["factory/s/l/a", "other/s/l/a/results", "factory/s/l/a/nope", "factory/s//a/results"]
)
def test_parse_refuses_foreign_topics(bad):
    with pytest.raises(TopicError):
        parse_topic(bad)


seg = st.from_regex(r"[A-Za-z0-9_.-]{1,10}", fullmatch=True)


@given(seg, seg, seg, st.sampled_from(list(Kind)), st.none() | seg)
def test_build_then_parse_round_trips(site, line, agent, kind, pipeline):
    t = parse_topic(build_topic(site, line, agent, kind, pipeline))
    assert (t.site, t.line, t.agent, t.kind, t.pipeline) == (site, line, agent, kind, pipeline)


def test_agent_filter_matches_results_of_every_pipeline():
    f = agent_filter(kind=Kind.RESULTS)
    assert topic_matches(f, "factory/s/l/a/results/p1")
    assert topic_matches(f, "factory/s/l/a/results")
    assert not topic_matches(f, "factory/s/l/a/events/p1")
