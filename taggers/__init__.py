"""Batch taggers: life-event, crowd, occupation and enterprise tags, rule-based and learned."""
