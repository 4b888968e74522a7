"""Proactive alerts: operator reminder rules, an exactly-once outbox, delivery and the scheduler.

Entry points (docs/architecture.md): ``evaluate_alerts(settings, db, as_of)`` and ``deliver(settings, db, now)``.
"""

from notifier.delivery import DeliverySummary, deliver
from notifier.engine import AlertSummary, dry_run, evaluate_alerts

# What another engine may import from this one (tests/test_layering.py holds every engine to it): these modules,
# and in them the names that do not start with "_". The rest is this engine's own and may change without notice.
PUBLIC_MODULES = ("notifier",)

__all__ = ["evaluate_alerts", "deliver", "dry_run", "AlertSummary", "DeliverySummary"]
