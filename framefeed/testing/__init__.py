"""Test helpers that ship with framefeed: the hostile-input fuzz harness and
guard-page bounded output buffers.

- `fuzz_inputs`: small seed videos (PyAV encoders) and seeded mutations of them;
- `fuzz_runner`: runs one decoding library on one input in a forked child with
  a memory cap and a time limit, and classifies what happened;
- `guard_pages`: outputs that end (or start) at a PROT_NONE page, for proving
  that no writer strays outside the buffer it was given.
"""
