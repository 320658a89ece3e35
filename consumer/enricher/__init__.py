"""The enricher: Claude rewrites the text of raised and escalated insights (docs/enricher.md).

Modules, each small and testable alone:

- ``settings``: ``EnricherSettings`` (``VECTOROS_*``; the key from ``ANTHROPIC_API_KEY``).
- ``context``: the bounded per-deal memory of the insight stream and the context of one insight.
- ``text``: ``EnrichedText``, the answer's shape and validation (no SDK import).
- ``prompt``: the cached system prompt, the forced strict tool, the delimited data block.
- ``client``: ``ClaudeWriter`` on the official ``anthropic`` SDK (retries, timeouts, usage, cost).
- ``budget``: the daily call/token budget per workspace.
- ``store``: the enrichment log (no second call), the heartbeat, the notifier's lookup.
- ``metrics``: ``EnricherMetrics`` and ``NotifierEnrichmentMetrics``.
- ``service``: ``Enricher`` (no Kafka inside), ``EnricherHandler`` (it on the consume loop) and
  ``run_enricher`` (``vectoros enrich``).

Importing this package does not import the ``anthropic`` SDK (a slow import); ``prompt``,
``client`` and ``service`` do.
"""
