"""One queue record: the JSON text the ingest service receives for an address.

Made where the line is at hand (the scanning worker that found a new
address, or the reader when it scans itself), so the reader, which commits
every chunk in order, does not spend its one CPU on text.
"""

from __future__ import annotations

from dataclasses import dataclass
from json.encoder import encode_basestring as encode_json_string

from datahubsync.logs.parser import file_hour, ip_text, line_time
from datahubsync.logs.queue import day_number


@dataclass(frozen=True)
class RecordFormat:
    """How a file's records are written: its day (by name, else today's), its hour (by
    name, else the line's), and what of the line travels."""

    day: str
    hour: int | None
    botnet_json: str  # botnet_type as a JSON string
    timestamp_source: str  # "line": the line's own time when it has one
    prefix_chars: int

    @classmethod
    def for_file(cls, name: str, botnet_type: str, timestamp_source: str,
                 prefix_chars: int, today: str) -> RecordFormat:
        hour = file_hour(name)
        return cls(hour[0] if hour else today, hour[1] if hour else None,
                   encode_json_string(botnet_type), timestamp_source, prefix_chars)

    @property
    def day_number(self) -> int:
        return day_number(self.day)

    def text(self, ip: int, line: bytes) -> str:
        stamp = line_time(line) if self.timestamp_source == "line" else None
        if stamp is not None:
            timestamp, source, day = f"{stamp[0]} {stamp[1]}", "line", stamp[0]
        else:
            hour = self.hour if self.hour is not None else 0
            timestamp, source, day = f"{self.day} {hour:02d}:00:00", "file_hour", self.day
        # Written out rather than json.dumps of a dict (a third of the time per record):
        # the address, stamps and hour are digits and dashes; only the two free texts
        # need JSON string escaping.
        log_hour = self.hour if self.hour is not None else int(timestamp[11:13])
        prefix = encode_json_string(line[: self.prefix_chars].decode("utf-8", "replace"))
        return (f'{{"ip": "{ip_text(ip)}", "timestamp": "{timestamp}", "timestamp_source": '
                f'"{source}", "date": "{day}", "log_hour": {log_hour}, "botnet_type": '
                f'{self.botnet_json}, "raw_line_prefix": {prefix}}}')
