"""The synthetic city: a deterministic export in the data contract plus its ground truth."""

from data.synth.city import DEFAULT_EVENTS_PER_SUBJECT, SynthSummary, generate_city

__all__ = ["DEFAULT_EVENTS_PER_SUBJECT", "SynthSummary", "generate_city"]
