"""Revenue forecast (issue 15): a Monte Carlo over the open pipeline (``simulate``, pure), the
deals open at an as-of date (``pipeline``, pure) and the ``forecasts`` table (``service``)."""
