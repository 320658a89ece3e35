"""One module per rule, each defining ``RULE`` (``consumer.rules.base.Rule``)."""
