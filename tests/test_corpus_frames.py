"""Every corpus file, both seek modes, every backend (`backends_under_test`):
frames equal PyAV's sequential decode.

Index access is compared everywhere except approximate mode on streams whose
header frame rate is not the truth (variable frame rate): there indices are
estimates by design, and time-based access is what must be exact. On the
NVDEC backends each file must be routed as its corpus entry says (NVDEC, or
the CPU with the stated reason); NVDEC's pixels are held to its colour
conversion's tolerance, the CPU's to swscale's exact output.
"""

from __future__ import annotations

import math
import random
import warnings

import pytest
import torch
from backends_under_test import (
    BACKENDS,
    cpu_pixel_error,
    decoder_routing,
    nvdec_pixel_error,
    open_decoder,
)

import corpus
from framefeed import VideoDecoder

MODES = ["exact", "approximate"]
IDS = [f.name for f in corpus.FILES]


def open_corpus_decoder(entry: corpus.CorpusFile, mode: str, kind: str) -> tuple[VideoDecoder, bool]:
    """(decoder on backend `kind`, whether NVDEC decodes), routing checked."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decoder = open_decoder(kind, entry.path, seek_mode=mode, dimension_order="NHWC")
    return decoder, decoder_routing(entry, kind, decoder)


def index_is_exact(entry: corpus.CorpusFile, mode: str) -> bool:
    return mode == "exact" or not entry.variable_frame_rate


def assert_pixels(entry: corpus.CorpusFile, on_nvdec: bool, actual: torch.Tensor,
                  expected: corpus.ReferenceFrame, where: str) -> None:
    if on_nvdec:
        error = nvdec_pixel_error(entry, actual, torch.from_numpy(expected.rgb))
    else:
        error = cpu_pixel_error(entry, actual.cpu().numpy(), expected.rgb)
    if error:
        pytest.fail(f"{where}: {error}")


def comparable_count(entry, mode, decoder, reference) -> int:
    if mode == "exact":
        assert len(decoder) == len(reference)
    return min(len(decoder), len(reference))


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("entry", corpus.FILES, ids=IDS)
def test_every_frame_by_index_in_order(entry, mode, kind):
    if not index_is_exact(entry, mode):
        pytest.skip("approximate indices on a variable-frame-rate stream are estimates")
    reference = corpus.reference_frames(entry.name)
    decoder, on_nvdec = open_corpus_decoder(entry, mode, kind)
    for i in range(comparable_count(entry, mode, decoder, reference)):
        frame = decoder.get_frame_at(i)
        assert frame.pts_seconds == reference[i].seconds, f"frame {i}"
        assert_pixels(entry, on_nvdec, frame.data, reference[i], f"frame {i}")
        if i + 1 < len(reference):
            assert frame.duration_seconds == pytest.approx(reference[i + 1].seconds - reference[i].seconds)


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("entry", corpus.FILES, ids=IDS)
def test_random_order_and_duplicate_batches(entry, mode, kind):
    if not index_is_exact(entry, mode):
        pytest.skip("approximate indices on a variable-frame-rate stream are estimates")
    reference = corpus.reference_frames(entry.name)
    decoder, on_nvdec = open_corpus_decoder(entry, mode, kind)
    count = comparable_count(entry, mode, decoder, reference)
    rng = random.Random(entry.name)
    indices = rng.sample(range(count), min(count, 25))
    indices += [indices[0], indices[-1], indices[0]]  # duplicates
    batch = decoder.get_frames_at(indices)
    assert batch.data.shape[0] == len(indices)
    for slot, i in enumerate(indices):
        assert batch.pts_seconds[slot].item() == reference[i].seconds
        assert_pixels(entry, on_nvdec, batch.data[slot], reference[i], f"slot {slot} (frame {i})")
    # A tensor of indices, negative ones included, gives the same frames.
    # (In approximate mode a header count above the real one maps the last
    # indices to the last frame, which is displayed until the end.)
    tensor_batch = decoder.get_frames_at(torch.tensor([-1, 0, -len(decoder)]))
    for slot, i in enumerate([count - 1, 0, 0]):
        assert_pixels(entry, on_nvdec, tensor_batch.data[slot], reference[i], f"tensor slot {slot}")


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("entry", corpus.FILES, ids=IDS)
def test_frames_played_at_boundaries_and_between(entry, mode, kind):
    reference = corpus.reference_frames(entry.name)
    decoder, on_nvdec = open_corpus_decoder(entry, mode, kind)
    end = decoder.metadata.end_stream_seconds
    times, expected = [], []
    for i, ref in enumerate(reference):
        if ref.seconds >= end:
            break  # a header that ends early (approximate mode) cannot reach this frame
        times.append(ref.seconds)
        expected.append(i)
        upper = reference[i + 1].seconds if i + 1 < len(reference) else end
        if upper > end:
            upper = end
        times.append((ref.seconds + upper) / 2)
        expected.append(i)
        times.append(math.nextafter(upper, -math.inf))
        expected.append(i)
    order = list(range(len(times)))
    random.Random(0).shuffle(order)
    times = [times[k] for k in order]
    expected = [expected[k] for k in order]
    batch = decoder.get_frames_played_at(times)
    for slot, i in enumerate(expected):
        assert batch.pts_seconds[slot].item() == reference[i].seconds, f"t={times[slot]!r} -> frame {i}"
        assert_pixels(entry, on_nvdec, batch.data[slot], reference[i], f"t={times[slot]!r}")
    # The single-frame method agrees.
    single = decoder.get_frame_played_at(times[0])
    assert single.pts_seconds == reference[expected[0]].seconds


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("entry", corpus.FILES, ids=IDS)
def test_ranges_slices_negative_indices_and_iteration(entry, mode, kind):
    if not index_is_exact(entry, mode):
        pytest.skip("approximate indices on a variable-frame-rate stream are estimates")
    reference = corpus.reference_frames(entry.name)
    decoder, on_nvdec = open_corpus_decoder(entry, mode, kind)
    count = comparable_count(entry, mode, decoder, reference)
    start, stop, step = 1, min(count, 40), 3
    batch = decoder.get_frames_in_range(start, stop, step)
    expected = list(range(start, stop, step))
    assert [p for p in batch.pts_seconds.tolist()] == [reference[i].seconds for i in expected]
    for slot, i in enumerate(expected):
        assert_pixels(entry, on_nvdec, batch.data[slot], reference[i], f"range slot {slot}")
    sliced = decoder[start:stop:step]
    assert torch.equal(sliced, batch.data)
    assert decoder[stop:start].shape[0] == 0  # empty slice, not an error
    assert decoder.get_frames_in_range(-3, 10**9).data.shape[0] == 3  # slice clamping
    if mode == "exact":
        assert_pixels(entry, on_nvdec, decoder[-1], reference[-1], "decoder[-1]")
        assert_pixels(entry, on_nvdec, decoder[-len(decoder)], reference[0], "decoder[-len]")
        with pytest.raises(IndexError):
            decoder[len(decoder)]
    seen = 0
    for i, frame in enumerate(decoder):
        if i < count:
            assert_pixels(entry, on_nvdec, frame, reference[i], f"iteration {i}")
        seen += 1
    assert seen == len(decoder)


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("entry", corpus.FILES, ids=IDS)
def test_frames_played_in_range(entry, mode, kind):
    reference = corpus.reference_frames(entry.name)
    decoder, on_nvdec = open_corpus_decoder(entry, mode, kind)
    begin = decoder.metadata.begin_stream_seconds
    end = decoder.metadata.end_stream_seconds
    start = (reference[2].seconds + reference[3].seconds) / 2  # inside frame 2
    stop = reference[min(9, len(reference) - 1)].seconds  # frame 9 starts at stop: excluded
    batch = decoder.get_frames_played_in_range(start, stop)
    assert batch.pts_seconds.tolist() == [r.seconds for r in reference[2:min(9, len(reference) - 1)]]
    for slot in range(len(batch)):
        assert_pixels(entry, on_nvdec, batch.data[slot], reference[2 + slot], f"range slot {slot}")
    assert len(decoder.get_frames_played_in_range(start, start)) == 0
    everything = decoder.get_frames_played_in_range(begin, end)
    reachable = [r for r in reference if r.seconds < end]
    assert everything.pts_seconds.tolist() == [r.seconds for r in reachable]
