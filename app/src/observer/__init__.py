"""The observer: a collector that appends one JSON line per interval to its archive."""
