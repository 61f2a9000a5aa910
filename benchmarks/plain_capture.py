#!/usr/bin/env python3
"""What people write without a framework: a thread per stream, urllib reads, kafka-python sends.

    python plain_capture.py --bootstrap 127.0.0.1:9092 --topic radio --seconds 60 URL [URL ...]

Each stream gets a thread that opens the URL, reads `--read-bytes` at a time and sends each read
as one Kafka record keyed by the stream number; on any error it waits a second and reconnects.
All threads share one KafkaProducer (acks=all, like streamtap). It stops after --seconds, flushes
and prints how many bytes it sent. Used by scenario 4 of `python -m benchmarks`.
"""

import argparse
import sys
import threading
import time
import urllib.request

from kafka import KafkaProducer


def use_c_crc32c():
    """kafka-python checksums batches in pure Python unless the `crc32c` package is installed
    (`pip install kafka-python[crc32c]`); this gives it a C CRC-32C the same way, so the
    comparison is not about that."""
    from kafka.record import default_records, util

    if getattr(util, "crc32c_c", None) is None and hasattr(default_records, "calc_crc32c"):
        import google_crc32c

        default_records.calc_crc32c = lambda data: google_crc32c.value(bytes(data))


def capture(url, key, producer, topic, stop, read_bytes, counts):
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                while not stop.is_set():
                    data = response.read(read_bytes)
                    if not data:
                        break
                    producer.send(topic, key=key, value=data)
                    counts[key] = counts.get(key, 0) + len(data)
        except Exception as error:  # noqa: BLE001 - keep going, like a real capture script
            counts["errors"] = counts.get("errors", 0) + 1
            print(f"{key.decode()}: {error}; reconnecting", file=sys.stderr)
            stop.wait(1.0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--read-bytes", type=int, default=16384)
    parser.add_argument("urls", nargs="+")
    args = parser.parse_args()
    use_c_crc32c()
    producer = KafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=5)
    stop = threading.Event()
    counts = {}
    threads = []
    for index, url in enumerate(args.urls):
        key = f"stream-{index:04d}".encode()
        thread = threading.Thread(target=capture, daemon=True,
                                  args=(url, key, producer, args.topic, stop, args.read_bytes, counts))
        thread.start()
        threads.append(thread)
    try:
        stop.wait(args.seconds)
    except KeyboardInterrupt:
        pass
    stop.set()
    for thread in threads:
        thread.join(timeout=35)
    producer.flush()
    producer.close()
    errors = counts.pop("errors", 0)
    print(f"sent {sum(counts.values())} bytes from {len(counts)} streams, {errors} errors")


if __name__ == "__main__":
    main()
