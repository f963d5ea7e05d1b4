"""Prometheus metrics of the API: what is counted (:mod:`.instruments`) and how a scrape
is answered (:mod:`.exposition`)."""
