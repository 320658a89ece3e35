"""The notifier: insight events -> Slack (Block Kit), Standard Webhooks and the console.

Modules: ``settings`` (``NotifierSettings``), ``slack`` (Block Kit builder, ``SlackClient``),
``webhook`` (signing, ``WebhookClient``), ``console``, ``delivery`` (rate limit, retries,
circuit breaker), ``log`` (the ``notifications`` table that prevents duplicates) and ``service``
(``run_notifier``: the Kafka consumer loop). Import the submodules directly; this package
imports nothing so that importing the builder does not pull in Kafka or PostgreSQL.
"""
