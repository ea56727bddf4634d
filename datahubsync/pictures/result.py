"""What one pass of the pictures worker did (``pictures once --json``, the fleet report)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PassResult:
    new_tasks: int = 0
    late_tasks: int = 0
    downloaded: int = 0
    skipped: int = 0
    missing: int = 0
    failed: int = 0
    bytes: int = 0
    processed: int = 0
    reported: int = 0
    step_failures: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def progressed(self) -> bool:
        return bool(self.new_tasks or self.downloaded or self.skipped or self.missing
                    or self.processed or self.reported)
