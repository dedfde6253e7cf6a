"""The sign-in throttle on its own clock: three free wrong tokens, then waits of 2, 4, 8 ... up to 60 s."""

from __future__ import annotations

from web.guards.signins import SignInGuard, Verdict

TOKEN = "correct horse battery staple"
ADDRESS = "192.0.2.1"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _wrong(guard: SignInGuard, address: str = ADDRESS) -> None:
    assert guard.check(address, "guess", TOKEN, "test").verdict is Verdict.WRONG


def _held_for(guard: SignInGuard, address: str = ADDRESS) -> float:
    attempt = guard.check(address, TOKEN, TOKEN, "test")
    assert attempt.verdict is Verdict.HELD, attempt
    return attempt.wait_s


def test_three_wrong_tokens_are_free_and_the_fourth_makes_the_address_wait() -> None:
    clock = Clock()
    guard = SignInGuard(clock)
    for _ in range(3):
        _wrong(guard)
    _wrong(guard)  # the fourth is still checked: it is the first to cost a wait
    assert _held_for(guard) == 2.0


def test_each_further_wrong_token_doubles_the_wait_up_to_a_minute() -> None:
    clock = Clock()
    guard = SignInGuard(clock)
    for _ in range(3):
        _wrong(guard)
    waits = []
    for _ in range(8):
        _wrong(guard)
        wait = _held_for(guard)
        waits.append(wait)
        clock.now += wait - 0.25  # quarters: exact in binary, so the sums land on the wait's end
        assert _held_for(guard) == 0.25, "refused until the whole wait is over"
        clock.now += 0.25
    assert waits == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    # Once the wait is over the right token is checked again, and a success starts the address afresh.
    assert guard.check(ADDRESS, TOKEN, TOKEN, "test").verdict is Verdict.ACCEPTED
    for _ in range(3):
        _wrong(guard)
    _wrong(guard)
    assert _held_for(guard) == 2.0


def test_the_wait_is_per_address_and_forgotten_after_a_quarter_of_an_hour() -> None:
    clock = Clock()
    guard = SignInGuard(clock)
    for _ in range(5):
        _wrong(guard)
        clock.now += 10.0
    assert guard.check("192.0.2.2", TOKEN, TOKEN, "test").verdict is Verdict.ACCEPTED
    clock.now += 14 * 60.0
    _wrong(guard)  # remembered: the sixth failure in a row
    assert _held_for(guard) == 8.0
    clock.now += 15 * 60.0 + 1
    for _ in range(3):
        _wrong(guard)  # forgotten: three free ones again
    _wrong(guard)
    assert _held_for(guard) == 2.0
