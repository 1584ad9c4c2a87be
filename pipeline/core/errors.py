"""User-facing errors: one line naming the file, the field and the fix."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or a refused action; printed as one line, never with a traceback."""

    def __init__(self, message: str, *, path: str | None = None, field: str | None = None,
                 fix: str | None = None):
        self.path = path
        self.field = field
        self.fix = fix
        self.bare = message
        super().__init__(self.render())

    def render(self) -> str:
        parts = []
        if self.path:
            parts.append(str(self.path))
        if self.field:
            parts.append(f"field '{self.field}'")
        head = ": ".join(parts)
        text = f"{head}: {self.bare}" if head else self.bare
        if self.fix:
            text += f" ({self.fix})"
        return text
