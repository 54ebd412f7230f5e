"""The intent parser: a few rules instead of an LLM, enough for calendar questions."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Intent:
    name: str
    day: datetime.date


_CALENDAR_WORDS = re.compile(
    r"\b(calendar|schedule|agenda|meetings?|events?|appointments?|busy|free)\b"
    r"|what('?s| is) on\b"
)


def parse_intent(question: str, today: datetime.date | None = None) -> Intent | None:
    """A calendar question, and for which day; None for anything else."""
    text = question.lower()
    if not _CALENDAR_WORDS.search(text):
        return None
    day = today or datetime.datetime.now(datetime.UTC).date()
    if "tomorrow" in text:
        day += datetime.timedelta(days=1)
    elif "yesterday" in text:
        day -= datetime.timedelta(days=1)
    return Intent("calendar.events", day)


def describe_events(events: list[dict[str, Any]], day: datetime.date) -> str:
    label = "today" if day == datetime.datetime.now(datetime.UTC).date() else day.isoformat()
    if not events:
        return f"Nothing on your calendar {label}."
    parts = []
    for event in events:
        start = str(event.get("start", ""))
        hour = start[11:16] if len(start) >= 16 else start
        parts.append(f"{hour} {event.get('title', '(untitled)')}".strip())
    return f"On your calendar {label}: " + "; ".join(parts) + "."
