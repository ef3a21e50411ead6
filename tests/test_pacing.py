"""Streamed text let out at the pace it arrives (tui/pacing.py), on a clock the tests set: the
pane shows more at every screen update while the model writes, in bursts too; never text that
has not arrived, in order, about half a second behind; and never half a character."""

from __future__ import annotations

from tui.pacing import LAG_S, Pacer

TICK = 0.1  # the chat screen's update interval at its fastest


def run(arrivals: dict[float, str], until: float) -> tuple[list[tuple[float, str]], str]:
    """Feed `arrivals` (time -> text) to a pacer and take from it every TICK until `until`: what
    each take gave, and everything that arrived."""
    pacer, taken, sent = Pacer(), [], ""
    times = sorted(arrivals)
    now = 0.0
    while now <= until + 1e-9:
        while times and times[0] <= now + 1e-9:
            text = arrivals[times.pop(0)]
            pacer.add(text)
            sent += text
        taken.append((now, pacer.take(now)))
        now = round(now + TICK, 6)
    return taken, sent


def steady(rate: float, chars: str, seconds: float) -> dict[float, str]:
    """A token of `chars` every 1/rate seconds."""
    return {round(n / rate, 6): chars for n in range(int(seconds * rate))}


def test_the_first_text_is_shown_as_it_comes() -> None:
    pacer = Pacer()
    assert pacer.take(0.0) == ""  # the screen's updates run before the model writes
    pacer.add("Once upon")
    assert pacer.take(0.1) == "Once upon"
    pacer.add(" a time")
    assert pacer.take(0.2) != " a time"  # then a share of what is held


def test_a_slow_model_s_text_changes_the_pane_at_every_update() -> None:
    taken, _ = run(steady(4, " word", 6), until=6)  # 4 tokens a second: 20 characters
    after_start = [text for now, text in taken if 1.0 <= now <= 5.5]
    assert all(after_start), [now for now, text in taken if 1.0 <= now <= 5.5 and not text]


def test_a_burst_then_a_pause_keeps_the_pane_changing_through_the_pause() -> None:
    # Six tokens in 0.3 s, then nothing for 0.7 s, over and over: models that share the cores take turns.
    arrivals = {round(second + n * 0.05, 6): " word" for second in range(6) for n in range(6)}
    taken, _ = run(arrivals, until=6)
    after_start = [text for now, text in taken if 2.0 <= now <= 5.5]
    assert all(after_start)


def test_the_text_comes_out_whole_in_order_and_never_ahead_of_the_model() -> None:
    arrivals = steady(7, " storm", 5)
    taken, sent = run(arrivals, until=8)
    shown = ""
    for now, text in taken:
        shown += text
        arrived = "".join(chunk for when, chunk in sorted(arrivals.items()) if when <= now + 1e-9)
        assert arrived.startswith(shown), f"ahead of the model at {now}"
    assert shown == sent


def test_the_text_held_is_about_half_a_second_of_the_model_s_writing() -> None:
    arrivals = steady(10, " lighthouse", 4)  # 110 characters a second
    taken, _ = run(arrivals, until=4)
    shown = ""
    for now, text in taken:
        shown += text
        held = sum(len(chunk) for when, chunk in arrivals.items() if when <= now + 1e-9) - len(shown)
        assert held <= 110 * (LAG_S + 2 * TICK), f"{held} characters held at {now}"


def test_what_is_held_when_the_model_stops_writing_comes_out_within_a_few_times_the_lag() -> None:
    arrivals = steady(5, " keeper", 2)
    taken, sent = run(arrivals, until=2 + 4 * LAG_S)
    shown = "".join(text for _, text in taken)
    assert shown == sent


def test_take_all_gives_everything_held_at_once() -> None:
    pacer = Pacer()
    pacer.add(" the")
    pacer.take(0.0)
    pacer.add(" lamp turned")
    pacer.take(0.1)
    rest = pacer.take_all()
    assert rest and pacer.take_all() == "" and pacer.take(1.0) == ""


def test_a_character_is_never_cut_from_its_accent_or_an_emoji_from_what_joins_it() -> None:
    for whole in ["e\u0301", "👩\u200d🚒", "❤\ufe0f", "👍🏽", "🏳️\u200d🌈"]:
        pacer = Pacer()
        pacer.held = whole + "x"
        for count in range(1, len(whole)):
            pacer.held = whole + "x"
            assert pacer.cut(count) == whole, (whole, count)
