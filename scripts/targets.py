"""The issue's performance targets, shared by scripts/bench (one run's
verdicts) and scripts/tally (the same targets pooled over runs)."""

# (scenario, mode, peer, least ratio of our req/s to the peer's).
THROUGHPUT_TARGETS = [
    ("S1", "1-core", "minihttp", 1.0),
    ("S2", "1-core", "minihttp", 1.0),
    ("S1", "2-core", "minihttp", 1.2),
    ("S2", "2-core", "minihttp", 1.2),
    ("S3", "1-core", "nginx", 1.0),
    ("S3", "2-core", "nginx", 1.0),
    ("S4", "1-core", "nginx", 1.0),
    ("S4", "2-core", "nginx", 1.0),
]
# The busiest worker's share in S1 on 2 cores, at most.
BALANCE_TARGET = 1.2
# Our server and its A/A control: a target is met when both copies meet it.
OURS = ["http-cluster", "http-cluster-again"]
