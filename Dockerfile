# One image for every service: `docker run vectoros-monitor <service>` (monitor, tick, sink,
# notify, gateway, enrich, run, ...). Configuration comes from VECTOROS_* environment variables.
# Dependencies come from requirements.lock (hash-checked), the same pins CI tested.
FROM python:3.12-slim AS build
WORKDIR /src
COPY requirements.lock ./
RUN pip install --no-cache-dir --prefix=/install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY producer ./producer
COPY consumer ./consumer
COPY vectoros ./vectoros
COPY app ./app
RUN PYTHONPATH=/install/lib/python3.12/site-packages \
    pip install --no-cache-dir --prefix=/install --no-deps --no-build-isolation .

FROM python:3.12-slim
RUN useradd --system --uid 10001 vectoros \
    && install -d -o vectoros /var/lib/vectoros  # the capture SQLite file (a volume in compose)
COPY --from=build /install /usr/local
USER vectoros
# Each service has its own default VECTOROS_METRICS_PORT (run 9464, monitor 9465, sink 9466,
# notifier 9467, enricher 9468, gateway 9469, ticker 9470, capture 9471, history 9472, api 9473),
# so none is set here.
ENV PYTHONUNBUFFERED=1 \
    VECTOROS_METRICS_HOST=0.0.0.0
EXPOSE 9464-9473
ENTRYPOINT ["vectoros"]
CMD ["--help"]
