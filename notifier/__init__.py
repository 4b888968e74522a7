"""Proactive alerts: operator reminder rules, an exactly-once outbox, delivery and the scheduler.

Entry points (docs/architecture.md): ``evaluate_alerts(settings, db, as_of)`` and ``deliver(settings, db, now)``.
"""

from notifier.delivery import DeliverySummary, deliver
from notifier.engine import AlertSummary, dry_run, evaluate_alerts

__all__ = ["evaluate_alerts", "deliver", "dry_run", "AlertSummary", "DeliverySummary"]
