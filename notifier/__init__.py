"""Proactive alerts: operator reminder rules, an exactly-once outbox, delivery and the scheduler."""
