"""The read-only operation dashboard: a stdlib HTTP server, a JSON API and a hand-written page.
`engine.dashboard.server.serve` is the entry point; `gravity dashboard` starts it.
"""
