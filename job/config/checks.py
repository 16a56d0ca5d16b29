"""The range checks a setting's value must pass (job.config.settings' `check=`), tested by job.config.validate."""


def within(low, high, why, *, low_open=False, high_open=False):
    """low <= value <= high (or < where open); None = unbounded on that side. Returns (predicate, what it needs)."""

    def ok(value) -> bool:
        above = low is None or (value > low if low_open else value >= low)
        below = high is None or (value < high if high_open else value <= high)
        return above and below

    return ok, why


NOT_NEGATIVE = within(0, None, "must be 0 or more")
FRACTION = within(0.0, 1.0, "is a fraction between 0 and 1")
MOMENTUM = within(0.0, 1.0, "must be in [0, 1)", high_open=True)
POSITIVE = within(0, None, "must be positive", low_open=True)
