"""The one Swapper interface: every family registered, inswapper ported without a change in output."""

from __future__ import annotations

import numpy as np
import pytest

from sealfuse.engine.errors import ConfigError
from sealfuse.engine.options import SwapOptions
from sealfuse.engine.pipeline import Pipeline
from sealfuse.engine.registry import CATALOG
from sealfuse.engine.swappers import Source, Swapper, family_of, swapper_names, swapper_specs


def test_every_swapper_name_maps_to_a_swapper_class_with_a_catalog_entry():
    names = swapper_names()
    assert {"mesh", "inswapper_128", "inswapper_128_fp16"} <= set(names)
    for name in names:
        cls = family_of(name)
        assert issubclass(cls, Swapper)
        if name != "mesh":
            assert CATALOG[name].family == cls.family, name
    assert all(CATALOG[s.name] == s for s in swapper_specs())


def test_an_unknown_swapper_is_an_option_error_listing_the_choices():
    with pytest.raises(ConfigError, match="inswapper_128") as info:
        family_of("roop_9000")
    assert info.value.exit_code == 2 and info.value.reason == "bad_options"


def test_inswapper_port_gives_insightfaces_output(standin_models, hanks_png, t1_frame):
    """The ported inswapper produces the crop and matrix insightface's INSwapper.get produces."""
    from insightface.model_zoo.inswapper import INSwapper

    opts = SwapOptions(models_dir=standin_models, execution_providers=("cpu",), execution_threads=2,
                       face_swapper_model="inswapper_128")
    pipe = Pipeline(opts, hanks_png)
    ours = pipe.models.swapper()
    registry = pipe.registry
    theirs = INSwapper(model_file=str(registry.resolve("inswapper_128").path),
                       session=registry.session("inswapper_128"))
    identity = pipe.models.identity(pipe.source)
    expected_latent = pipe.source_face.normed_embedding.reshape(1, -1) @ theirs.emap
    expected_latent /= np.linalg.norm(expected_latent)
    assert np.allclose(identity, expected_latent, atol=1e-5)
    for face in pipe.detect(t1_frame):
        result = ours.swap(t1_frame, face, identity)
        crop, m = theirs.get(t1_frame, face, pipe.source_face, paste_back=False)
        assert result.crop.shape == crop.shape == (128, 128, 3)
        assert np.allclose(result.matrix, m, atol=1e-3)
        diff = np.abs(result.crop.astype(np.int16) - crop.astype(np.int16))
        assert diff.max() <= 2 and diff.mean() < 0.05, (diff.max(), diff.mean())


def test_identity_is_prepared_once_per_source_and_reused(standin_models, hanks_png, t1_frame):
    opts = SwapOptions(models_dir=standin_models, execution_providers=("cpu",), execution_threads=2,
                       face_swapper_model="inswapper_128")
    first = Pipeline(opts, hanks_png)
    swapper = first.models.swapper()
    calls: list[Source] = []
    original = swapper.prepare

    def counting(source: Source):
        calls.append(source)
        return original(source)

    swapper.prepare = counting  # type: ignore[method-assign]
    second = Pipeline(opts, hanks_png, models=first.models)
    assert calls == [] and second.source.key == first.source.key
    other = Pipeline(opts, t1_frame, models=first.models)  # another source: prepared once
    assert len(calls) == 1 and calls[0].key == other.source.key


def test_mesh_is_a_swapper_that_needs_no_recognizer(cpu_options, hanks_png, t1_frame):
    pipe = Pipeline(cpu_options.with_(face_swapper_model="mesh"), hanks_png)
    swapper = pipe.models.swapper()
    assert swapper.family == "mesh" and not swapper.needs_embedding
    assert pipe.models.recognizer_name is None
    face = pipe.detect(t1_frame)[0]
    result = swapper.swap(t1_frame, face, pipe.models.identity(pipe.source))
    side = result.crop.shape[0]
    assert result.crop.shape == (side, side, 3) and result.mask is not None and result.mask.shape == (side, side)
    # the mask is zero at the crop's corners and full in the middle of the face
    assert result.mask[0, 0] == 0.0 and result.mask[side // 2, side // 2] > 0.9
