"""One file per person and per enterprise (一人一档, 一企一档): attributes, licences and behaviour, built in batch."""
