"""``vectoros gateway``: CRM webhooks (HubSpot, Pipedrive, Salesforce CDC, Twenty) in, validated
deal events out on ``deal-events`` (key ``deal_id``). See ``docs/gateway.md``.

Modules: ``settings`` (``GatewaySettings``), ``app`` (the Starlette app: ``build_app``), ``auth``
(signature and credential checks), ``hubspot``/``pipedrive``/``salesforce``/``twenty`` (pure
normalizers: payload -> deal events), ``common`` (what they share), ``stages`` (stage mapping),
``metrics`` (``GatewayMetrics``), ``service`` (``run_gateway``: uvicorn + producer).
"""
