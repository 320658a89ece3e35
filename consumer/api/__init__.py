"""The read API and the dashboard (``vectoros api``): insights, deals, forecasts and rule
statistics of one workspace per token, live updates over server-sent events, and the web page.

A read-side service: it reads the tables the sink, history and forecast services write, and
``deal-insights`` for the live stream; it imports plumbing and contracts only.
"""
