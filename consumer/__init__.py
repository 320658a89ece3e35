"""Every Kafka consumer: the monitor (state + rules), and later the sink, notifier, enricher."""
