"""The one exception type that reaches the user as a one-line error."""


class DlrunError(Exception):
    """A problem with the user's input or environment, reported as one line (no traceback)."""


class TrainingDiverged(DlrunError):
    """Training stopped on a NaN/Inf loss; the report is already printed and in summary.json."""
