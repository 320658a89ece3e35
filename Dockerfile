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
RUN PYTHONPATH=/install/lib/python3.12/site-packages \
    pip install --no-cache-dir --prefix=/install --no-deps --no-build-isolation .

FROM python:3.12-slim
RUN useradd --system --uid 10001 vectoros
COPY --from=build /install /usr/local
USER vectoros
ENV PYTHONUNBUFFERED=1 \
    VECTOROS_METRICS_HOST=0.0.0.0 \
    VECTOROS_METRICS_PORT=9464
EXPOSE 9464
ENTRYPOINT ["vectoros"]
CMD ["--help"]
