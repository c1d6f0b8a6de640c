"""`framefeed bench`: workloads, peers, interleaved timing and reports."""
