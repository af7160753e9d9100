"""Apps gone from the config files, held until a later read confirms they are gone.

A file mid-write (an editor's save, `cat >`, a ConfigMap volume swap, a full disk) can lose
documents for a moment; deleting an app's resources on that one read would be a data loss.
An app that disappears stays in the running config until the files, read again at least
`grace` seconds later, still lack it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from daemon.settings import Application


@dataclass(slots=True)
class PendingRemovals:
    """Apps missing from the files since a monotonic time."""

    since: dict[str, tuple[Application, float]] = field(default_factory=dict)

    def note(self, app: Application, now: float) -> bool:
        """Record `app` as missing (the first time only); True when newly recorded."""
        if app.name in self.since:
            return False
        self.since[app.name] = (app, now)
        return True

    def back(self, name: str) -> bool:
        """`name` is in the files again; True if it was pending."""
        return self.since.pop(name, None) is not None

    def held(self) -> list[Application]:
        """The apps kept in the running config while their removal is unconfirmed."""
        return [app for app, _ in self.since.values()]

    def due(self, now: float, grace: float) -> frozenset[str]:
        """The names missing for at least `grace` seconds: a read now may confirm them."""
        return frozenset(n for n, (_, t) in self.since.items() if now - t >= grace)

    def confirm(self, name: str) -> Application | None:
        """Drop `name` from the pending set: its removal is confirmed."""
        entry = self.since.pop(name, None)
        return entry[0] if entry else None

    def settle(
        self,
        before: Mapping[str, Application],
        present: Collection[str],
        *,
        now: float,
        grace: float,
    ) -> Settled:
        """One read of the apps: those of `before` missing from `present` start (or keep)
        waiting, those missing for `grace` seconds are removed now, those present again stop
        waiting. A grace of 0 removes at once."""
        back = [name for name in list(self.since) if name in present and self.back(name)]
        due = self.due(now, grace)
        settled = Settled(back=back)
        for name, app in before.items():
            if name in present:
                continue
            if grace <= 0 or name in due:
                settled.removed.append(self.confirm(name) or app)
            else:
                if self.note(app, now):
                    settled.noted.append(app)
                settled.held.append(app)
        return settled


@dataclass(slots=True)
class Settled:
    """What one read decided (`PendingRemovals.settle`)."""

    back: list[str] = field(default_factory=list)  # missing before, present again
    removed: list[Application] = field(default_factory=list)  # removal confirmed now
    noted: list[Application] = field(default_factory=list)  # newly missing
    held: list[Application] = field(default_factory=list)  # missing, kept until confirmed
