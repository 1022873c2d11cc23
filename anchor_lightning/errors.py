"""User-facing errors: one line naming where the problem is, printed by the CLI without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (data, config, tokenizer), not a bug.

    Rendered as ``file:line: field: message`` with the parts that are known.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None, field: str | None = None):
        self.message, self.file, self.line, self.field = message, file, line, field
        super().__init__(self.render())

    def render(self) -> str:
        where = []
        if self.file is not None:
            where.append(f"{self.file}:{self.line}" if self.line is not None else str(self.file))
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return ": ".join([*where, self.message])


class RunWarning(UserWarning):
    """Something the user of a run should know that does not stop it; the command line prints it as one
    line, ``warning: ...``, without the source line Python's default format adds."""


def require_at_least(*checks: tuple[str, float | None, float]) -> None:
    """Each ``(field, value, least)``: a value below its least stops with one line naming the field (None
    passes: the setting is off)."""
    for field, value, least in checks:
        if value is not None and value < least:
            raise UserError(f"{value} is below {least}", field=field)


def broken_model(outputs: str, file: str | None = None) -> UserError:
    """The one line for a model whose ``outputs`` are not finite: no score of such a model means anything
    (its needles would score at chance, its RULER near zero, its perplexity NaN), so nothing is evaluated."""
    return UserError(
        f"the model's {outputs} are not finite: the model is broken (a NaN or infinite weight, or an overflow in "
        "its dtype); nothing is evaluated",
        file=file,
    )
