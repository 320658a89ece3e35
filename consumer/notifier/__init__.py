"""The notifier: insight events -> Slack (Block Kit), Standard Webhooks and the console.

Modules: ``settings`` (``NotifierSettings``), ``slack`` (Block Kit builder, ``SlackClient``),
``webhook`` (signing, ``WebhookClient``), ``console``, ``delivery`` (rate limit, retries,
circuit breaker), ``log`` (the ``notifications`` table that prevents duplicates) and ``service``
(``NotifierHandler`` on the consume loop, ``run_notifier``). Import the submodules directly;
this package imports nothing so that importing the builder does not pull in Kafka or PostgreSQL.
"""
