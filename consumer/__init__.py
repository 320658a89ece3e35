"""Every Kafka consumer: the monitor (state + rules), and later the sink, notifier, enricher.

The monitor's per-record path (``vectoros.native.MODULES``) runs compiled with mypyc when it has
been built (``make native``) and still matches these sources; the first import of this package
decides, before any of those modules is imported.
"""

from vectoros import native

native.activate()
