"""One router per resource; :data:`ROUTERS` is what the app includes, in this order."""

from yiwang.api.routes import alerts, events, feed, health, models, preferences, profile, rules, tags

ROUTERS = (
    health.router,
    feed.router,
    alerts.router,
    events.router,
    profile.router,
    tags.router,
    preferences.router,
    rules.router,
    models.router,
)
