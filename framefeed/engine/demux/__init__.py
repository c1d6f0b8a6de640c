"""Demuxing: containers, streams, header metadata and the exact frame index."""
